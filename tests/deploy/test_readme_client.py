"""The conventions a client's users expect, against a real core: the README's client
example runs as written; tenant names wherever a tenant is named; auto-paging
iterators; one default for where watch() starts (the client's and identityctl's);
`-o json`, help and --version on the command lines, and --help that starts nothing."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from identity_service.settings import Settings
from scim_identity_client import IdentityClient
from scim_identity_client.cli import build_parser
from scim_identity_client.types import Group, User

from ..support import ROOT, VENV_BIN, ServiceThread, free_port


def readme_client_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using the Python client", 1)[1]
    (block,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    return str(block)


@pytest.fixture(scope="module")
def core_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    tmp = tmp_path_factory.mktemp("readme")
    service = ServiceThread(
        Settings(database_url=f"sqlite:///{tmp / 'identity.db'}", listen="127.0.0.1:0")
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def core(core_service: ServiceThread) -> str:
    return f"127.0.0.1:{core_service.port}"


def run_readme_example(
    python: str, target: str, token_file: Path | None = None, cwd: Path | None = None
) -> str:
    env = {"IDENTITY_TARGET": target, "PATH": "/usr/bin:/bin"}
    if token_file is not None:
        env["IDENTITY_TOKEN_FILE"] = str(token_file)
    out = subprocess.run(
        [python, "-c", readme_client_example()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_readme_client_example_runs_as_written(core: str) -> None:
    with IdentityClient(core) as admin:
        admin.create_tenant("demo")
    out = run_readme_example(sys.executable, core).splitlines()
    assert re.fullmatch(r"\S{36} ada@example.com", out[0])
    assert re.fullmatch(r"1 tenant.created \S{36}", out[1])


def test_tenant_names_everywhere_and_iterators(core: str) -> None:
    with IdentityClient(core) as client:
        tenant = client.create_tenant("by-name")
        for i in range(7):
            client.create_user("by-name", User(user_name=f"u{i}@example.com"))
        group = client.create_group("by-name", Group(display_name="team"))
        assert client.get_user("by-name", client.iter_users(tenant.id).__next__().meta.id)
        # Pages of 3: seven users in three pages, all of them, in order.
        names = [u.user_name for u in client.iter_users("by-name", page_size=3)]
        assert names == [f"u{i}@example.com" for i in range(7)]
        assert [g.meta.id for g in client.iter_groups("by-name", page_size=1)] == [group.meta.id]
        assert client.list_users("by-name").total_results == 7
        assert client.get_revision("by-name").revision == client.get_revision(tenant.id).revision
        assert client.list_roles("by-name") == []
        ops = list(client.iter_operations("by-name", page_size=2))
        assert ops == []  # history is what the gateway records


def test_watch_starts_now_by_default_in_client_and_cli(
    core: str, core_service: ServiceThread
) -> None:
    assert core_service.service is not None
    streams = core_service.service.streams
    with IdentityClient(core) as client:
        tenant = client.create_tenant("watch-default")
        client.create_user(tenant.id, User(user_name="before@example.com"))
        replay = client.watch("watch-default", since=0)
        assert next(replay).revision == 1  # since=0 replays what is kept
        replay.close()
        deadline = time.monotonic() + 30
        while streams.active_streams():  # the replay's stream has ended on the server
            assert time.monotonic() < deadline, "a stream stayed open"
            time.sleep(0.05)
        w = client.watch("watch-default")  # the default: from now on
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(next(w)))
        reader.start()
        cli = subprocess.Popen(
            [
                str(VENV_BIN / "identityctl"),
                "--target",
                core,
                "watch",
                "watch-default",
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while streams.active_streams() < 2:  # both connected
                assert time.monotonic() < deadline, "the watches never connected"
                time.sleep(0.05)
            client.create_user(tenant.id, User(user_name="after@example.com"))
            reader.join(20)
            (ev,) = got
            assert ev.user.user_name == "after@example.com"
            assert cli.stdout is not None
            printed = json.loads(cli.stdout.readline())
            assert printed["revision"] == ev.revision
            assert printed["resource"]["userName"] == "after@example.com"
        finally:
            w.close()
            cli.terminate()
            cli.wait(10)


def _cli_json(core: str, *args: str) -> object:
    out = subprocess.run(
        [str(VENV_BIN / "identityctl"), "--target", core, *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_list_and_show_command_speaks_json(core: str) -> None:
    with IdentityClient(core) as client:
        tenant = client.create_tenant("json-out")
        user = client.create_user(tenant.id, User(user_name="j@example.com"))
        client.create_role(tenant.id, "Admin")
        client.issue_token("json-out")
    tenants = _cli_json(core, "tenant", "list")
    assert isinstance(tenants, list) and "json-out" in [t["name"] for t in tenants]
    shown = _cli_json(core, "tenant", "show", "json-out")
    assert isinstance(shown, dict) and shown["id"] == tenant.id
    (tok,) = _cli_json(core, "token", "list", "json-out")
    assert "secret" not in json.dumps(tok) or tok.get("secret", "") == ""
    assert [r["name"] for r in _cli_json(core, "role", "list", "json-out")] == ["Admin"]
    assert _cli_json(core, "role", "assignments", "json-out") == []
    users = _cli_json(core, "user", "list", "json-out")
    assert [u["user_name"] for u in users] == ["j@example.com"]
    one = _cli_json(core, "user", "show", "json-out", user.meta.id)
    assert one["user_name"] == "j@example.com"
    assert _cli_json(core, "history", "json-out") == []
    assert isinstance(_cli_json(core, "policy", "show", "json-out"), dict)


def _walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, str, bool]]:
    """(command path, its help, whether it lists or shows) of every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                has_o = any("--output" in a.option_strings for a in sub._actions)
                yield f"{path} {name}".strip(), helps.get(name, ""), has_o
                yield from _walk(sub, f"{path} {name}")


def test_every_subcommand_has_help_and_list_show_commands_take_o_json() -> None:
    commands = list(_walk(build_parser()))
    assert len(commands) > 25
    for path, help_text, has_output in commands:
        assert help_text, f"identityctl {path} has no help"
        leaf = path.split()[-1]
        if leaf in ("list", "show", "assignments") or path in ("history", "watch"):
            assert has_output, f"identityctl {path} has no -o json"


@pytest.mark.parametrize(
    "program", ["identity-service", "scim-gateway", "identityctl", "identity-admin"]
)
def test_version_and_help_start_nothing(program: str) -> None:
    version = subprocess.run(
        [str(VENV_BIN / program), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert re.fullmatch(rf"{program} \S+\n", version.stdout)
    port = free_port()
    helped = subprocess.run(
        [str(VENV_BIN / program), "--help"],
        env={
            "IDENTITY_LISTEN": f"127.0.0.1:{port}",
            "SCIM_LISTEN": f"127.0.0.1:{port}",
            "ADMIN_LISTEN": f"127.0.0.1:{port}",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "usage:" in helped.stdout
    # Nothing listens: --help printed and left.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
