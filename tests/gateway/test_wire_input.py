"""What only the real server sees (issue #15): chunked request bodies, as proxies
send them, are read like any other within SCIM_MAX_PAYLOAD_BYTES; a Host the
gateway does not answer to is 400 by default. Real processes, SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from scim_identity_client import IdentityClient

from ..support import free_port, http_request, start_gateway_process, start_identity_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int, str, str]]:
    """(core target, gateway port, tenant name, token)."""
    tmp = tmp_path_factory.mktemp("wire")
    core, target = start_identity_process(database_url, tmp)
    gateway, port = start_gateway_process(target, tmp, SCIM_MAX_PAYLOAD_BYTES="4096")
    with IdentityClient(target) as admin:
        t = admin.create_tenant(f"wire-{free_port()}")
        token = admin.issue_token(t.id).secret
    yield target, port, t.name, token
    gateway.stop()
    core.stop()


def _chunked(port: int, path: str, token: str, body: bytes, chunk: int) -> tuple[int, bytes]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    parts = [head]
    for i in range(0, len(body), chunk):
        piece = body[i : i + chunk]
        parts.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    parts.append(b"0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for p in parts:
            try:
                s.sendall(p)
            except OSError:
                break  # the server answered (and closed) before the whole body
        answer = b""
        while data := s.recv(65536):
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def _count(target: str, tenant: str) -> int:
    with IdentityClient(target) as admin:
        return admin.list_users(admin.get_tenant(tenant).id).total_results


def test_a_chunked_body_is_read_like_any_other(stack: tuple[str, int, str, str]) -> None:
    target, port, tenant, token = stack
    before = _count(target, tenant)
    body = json.dumps({"userName": f"chunked-{free_port()}", "nickName": "x" * 500}).encode()
    status, answer = _chunked(port, f"/scim/v2/{tenant}/Users", token, body, chunk=37)
    assert status == 201, answer
    assert _count(target, tenant) == before + 1


def test_a_chunked_body_over_the_limit_is_413_and_stores_nothing(
    stack: tuple[str, int, str, str],
) -> None:
    target, port, tenant, token = stack
    before = _count(target, tenant)
    body = json.dumps({"userName": f"big-{free_port()}", "nickName": "x" * 5000}).encode()
    status, answer = _chunked(port, f"/scim/v2/{tenant}/Users", token, body, chunk=1000)
    assert status == 413, answer
    assert json.loads(answer)["status"] == "413"
    assert _count(target, tenant) == before


def test_a_host_the_gateway_does_not_answer_to_is_400(stack: tuple[str, int, str, str]) -> None:
    target, port, tenant, token = stack
    before = _count(target, tenant)
    body = json.dumps({"userName": f"host-{free_port()}"}).encode()
    status, _, answer = http_request(
        port,
        "POST",
        f"/scim/v2/{tenant}/Users",
        token=token,
        body=body,
        headers={"Host": "evil.example"},
    )
    assert status == 400, answer
    assert json.loads(answer)["scimType"] == "invalidValue"
    assert _count(target, tenant) == before
    # The address it listens on is answered, and is what Location names.
    status, headers, answer = http_request(
        port, "POST", f"/scim/v2/{tenant}/Users", token=token, body=body
    )
    assert status == 201, answer
    assert headers["location"].startswith(f"http://127.0.0.1:{port}/scim/v2/{tenant}/Users/")
