"""The console's History, Set up your IdP and Live pages against the real console,
gateway and core processes (both databases): what an IdP's requests leave in the
history and how an admin finds them (filters, pages, an operation's error), what
an IdP's admin must type for this tenant and when its first request arrived, the
change events as they happen (server-sent events over a real connection, resumed
by Last-Event-ID, ended when the client goes), and bad input: a 400 page, never a
5xx. A tenant admin reaches none of it for another tenant (404)."""

from __future__ import annotations

import html
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from scim_identity_api.urns import CORE_USER as USER_SCHEMA
from scim_identity_api.v1 import policy_pb2
from scim_identity_client import IdentityClient
from scim_identity_client.types import Operation, OperationKind, Tenant, User

from ..support import CONSOLE_COOKIE, ServiceThread, Visitor
from .conftest import ApiClient, Stack, start_console

pytestmark = pytest.mark.e2e


def scim(
    stack: Stack, tenant: Tenant, method: str, path: str, token: str, *, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    """A SCIM request to the real gateway: (status, headers, JSON body or None)."""
    parts = urllib.parse.urlsplit(stack.gateway_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    data = json.dumps(body) if body is not None else None
    conn.request(method, f"/scim/v2/{tenant.name}{path}", body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    answer = {k.lower(): v for k, v in resp.getheaders()}
    return resp.status, answer, json.loads(raw) if raw else None


def new_user(name: str) -> dict[str, Any]:
    return {"schemas": [USER_SCHEMA], "userName": name, "name": {"givenName": "Ada"}}


def recorded(
    client: IdentityClient, tenant: Tenant, until: Callable[[list[Operation]], bool]
) -> list[Operation]:
    """The tenant's history once `until` holds (the gateway sends its records in
    batches a fraction of a second after the requests)."""
    deadline = time.monotonic() + 15
    while True:
        ops = list(client.list_operations(tenant.id, page_size=1000).operations)
        if until(ops) or time.monotonic() > deadline:
            assert until(ops), [(o.method, o.status) for o in ops]
            return ops
        time.sleep(0.05)


def rows(body: str) -> list[str]:
    """The operation ids of a History page's rows, in order."""
    return re.findall(r'<tr data-operation="([^"]+)"', body)


# -- History ----------------------------------------------------------------------------


def test_history_filters_pages_and_each_operations_error(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    token = client.issue_token(tenant.id, description="Okta").token
    secret = client.issue_token(tenant.id).secret
    client.revoke_token(tenant.id, client.list_tokens(tenant.id)[-1].id)
    good = client.issue_token(tenant.id, description="Okta 2")
    created, headers, _ = scim(stack, tenant, "POST", "/Users", good.secret, body=new_user("ada@x"))
    assert created == 201
    first_request = headers["x-request-id"]
    # The same userName, other attributes (the same ones would be a retry: 201).
    again = {**new_user("ada@x"), "name": {"givenName": "Another"}}
    taken, _, _ = scim(stack, tenant, "POST", "/Users", good.secret, body=again)
    assert taken == 409
    assert scim(stack, tenant, "GET", "/Users", secret)[0] == 401  # revoked
    assert scim(stack, tenant, "GET", f"/Users/{uuid.uuid4()}", good.secret)[0] == 404
    ops = recorded(client, tenant, lambda ops: len(ops) >= 4)
    by_status = {o.status: o for o in ops}
    assert {201, 409, 401, 404} <= set(by_status)

    base = f"/tenants/{tenant.name}/history"
    page = admin_of.get(base)
    assert page.status == 200 and 'aria-current="page">History' in page.body
    assert rows(page.body) == [o.id for o in ops]  # newest first
    # Exact status, outcome, kind, request id, source: each a GET filter.
    conflict = admin_of.get(f"{base}?status=409")
    assert rows(conflict.body) == [by_status[409].id]
    assert "409 Conflict" in conflict.body and "uniqueness" in conflict.body
    errors = admin_of.get(f"{base}?outcome=error")
    assert set(rows(errors.body)) == {by_status[s].id for s in (409, 401, 404)}
    creates = admin_of.get(f"{base}?kind=create&resource_type=User")
    assert set(rows(creates.body)) == {by_status[201].id, by_status[409].id}
    one = admin_of.get(f"{base}?request_id={urllib.parse.quote(first_request)}")
    assert rows(one.body) == [by_status[201].id]
    assert rows(admin_of.get(f"{base}?source=admin").body) == []
    assert "No operations match these filters" in admin_of.get(f"{base}?status=418").body
    # The form shows the filters back.
    assert 'value="409"' in conflict.body

    # An operation opens to its detail and error.
    detail = admin_of.get(f"{base}/{by_status[409].id}")
    assert detail.status == 200
    assert 'id="op-error"' in detail.body and "uniqueness" in detail.body
    assert by_status[409].detail and by_status[409].detail in html.unescape(detail.body)
    assert by_status[409].request_id in detail.body
    assert f"{good.token.prefix}…" in detail.body and "Okta 2" in detail.body
    refused = admin_of.get(f"{base}/{by_status[401].id}")
    assert "401 Unauthorized" in refused.body and "revoked" in refused.body
    assert 'id="op-error"' not in admin_of.get(f"{base}/{by_status[201].id}").body
    assert token.prefix  # (the first token stays live: listed, never shown whole)

    # Pages: 50 a page, older ones behind a link, none twice or missed.
    client.record_operations(
        [
            Operation(
                tenant_id=tenant.id,
                method="GET",
                kind=OperationKind.OPERATION_KIND_SEARCH,
                resource_type="User",
                status=200,
                request_id=f"bulk-{i}",
                token_id=good.token.id,
            )
            for i in range(60)
        ]
    )
    every = [o.id for o in client.list_operations(tenant.id, page_size=1000).operations]
    assert len(every) == 64
    first = admin_of.get(base)
    assert len(rows(first.body)) == 50
    link = re.search(r'href="([^"]+)" id="next-page"', first.body)
    assert link is not None
    second = admin_of.get(link.group(1).replace("&amp;", "&"))
    assert second.status == 200 and 'id="next-page"' not in second.body
    assert rows(first.body) + rows(second.body) == every
    assert 'id="first-page"' in second.body
    # A filtered view pages with its filters.
    searches = admin_of.get(f"{base}?kind=search")
    link = re.search(r'href="([^"]+)" id="next-page"', searches.body)
    assert link is not None and "kind=search" in link.group(1)


@pytest.mark.parametrize(
    "query",
    [
        "status=abc",
        "status=999",
        "status=40",
        "status=%EF%BC%94%EF%BC%90%EF%BC%91",  # fullwidth digits
        "status=401&status=403",
        "outcome=maybe",
        "kind=explode",
        "source=everyone",
        "resource_type=%3Cscript%3E",
        "since=yesterday",
        "since=2026-13-01",
        "since=2026-02-30T10:00",
        "until=99999-01-01",
        "since=2026-12-04T10:00&until=2026-12-04T09:00",
        "request_id=two%20words",
        "request_id=" + "x" * 10_000,
        "page=not-a-page",
        # The shape of one, but no record of it. A fixed value: pytest-xdist's workers
        # must collect the same test ids (a random one failed every `make test`).
        "page=6f1c1d2e-8a4b-4c3d-9e2f-0a1b2c3d4e5f",
        "sort=time",
    ],
)
def test_bad_history_filters_are_a_400_page(admin_of: Visitor, tenant: Tenant, query: str) -> None:
    page = admin_of.get(f"/tenants/{tenant.name}/history?{query}")
    assert page.status == 400, page.body
    assert 'id="error"' in page.body and 'id="filters"' in page.body
    assert "<script>" not in page.body


def test_an_operation_of_another_tenant_or_none_is_not_found(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    other = client.create_tenant(f"{tenant.name}-x")
    client.record_operation(
        Operation(tenant_id=other.id, method="GET", kind=1, status=200, detail="theirs")
    )
    (theirs,) = client.list_operations(other.id).operations
    base = f"/tenants/{tenant.name}/history"
    missing = admin_of.get(f"/tenants/{tenant.name}/history/{uuid.uuid4()}")
    assert missing.status == 404
    for op_id in (theirs.id, "x" * 5000, "..", "%00"):
        page = admin_of.get(f"{base}/{op_id}")
        assert page.status == 404 and page.body == missing.body, op_id


# -- Set up your IdP ----------------------------------------------------------------------


def test_setup_pages_fill_in_the_tenant_and_test_the_connection(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    url = f"{stack.gateway_url}/scim/v2/{tenant.name}"
    overview = admin_of.get(f"/tenants/{tenant.name}/setup")
    assert overview.status == 200 and 'aria-current="page">Set up your IdP' in overview.body
    assert url in overview.body
    assert 'id="get-token"' in overview.body  # no token yet: the Connector page gives one
    assert "No request with one of this tenant" in overview.body
    okta = admin_of.get(f"/tenants/{tenant.name}/setup/okta")
    assert okta.status == 200
    for text in (
        f'<code id="okta-url">{url}</code>',
        '<code id="okta-unique">userName</code>',
        "<strong>HTTP Header</strong>",
        "<strong>Push New Users</strong>",
        "<strong>Push Groups</strong>",
        "<li><strong>Create Users</strong></li>",
        "Deactivate Users",
        f'href="/tenants/{tenant.name}/connector"',
    ):
        assert text in okta.body, text
    entra = admin_of.get(f"/tenants/{tenant.name}/setup/entra")
    assert entra.status == 200
    assert f'<code id="entra-url">{url}</code>' in entra.body
    assert "userPrincipalName" in entra.body and "Secret Token" in entra.body
    assert admin_of.get(f"/tenants/{tenant.name}/setup/onelogin").status == 404

    # The IdP's test: its first request with a token, then the latest one.
    secret = client.issue_token(tenant.id, description="Okta").secret
    assert scim(stack, tenant, "GET", "/Users?count=1", secret)[0] == 200
    recorded(client, tenant, lambda ops: len(ops) == 1)
    tested = admin_of.get(f"/tenants/{tenant.name}/setup/okta")
    first = re.search(r'<p id="first-request">(.*?)</p>', tested.body, re.S)
    assert first is not None and "first reached this connector" in first.group(1)
    (op,) = client.list_operations(tenant.id).operations
    stamp = op.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    assert stamp in first.group(1) and "200 OK" in first.group(1)
    assert 'id="connection-ok"' in tested.body
    # The token revoked, the IdP still sends it: the latest request is a 401 with
    # what to do about it; the first stays. (A secret that is no token of the
    # tenant's is recorded nowhere: anyone may send one.)
    (token,) = client.list_tokens(tenant.id)
    client.revoke_token(tenant.id, token.id)
    assert scim(stack, tenant, "GET", "/Users", secret)[0] == 401
    assert scim(stack, tenant, "GET", "/Users", "scim_wrong")[0] == 401
    recorded(client, tenant, lambda ops: len(ops) == 2)
    wrong = admin_of.get(f"/tenants/{tenant.name}/setup")
    still = re.search(r'<p id="first-request">(.*?)</p>', wrong.body, re.S)
    assert still is not None and stamp in still.group(1) and "200 OK" in still.group(1)
    latest = re.search(r'<p id="latest-request">(.*?)</p>', wrong.body, re.S)
    assert latest is not None and "401 Unauthorized" in latest.group(1)
    assert f"{token.prefix}…" in latest.group(1)
    assert 'id="latest-advice"' in wrong.body and 'id="connection-ok"' not in wrong.body
    assert 'id="get-token"' in wrong.body  # no live token left: the Connector page


def test_setup_follows_the_tenants_policy(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor
) -> None:
    """Panther's way: users created by sign-in only, no Groups, a role attribute."""
    role = policy_pb2.AttributeRoleRule()
    role.path.schema = USER_SCHEMA
    role.path.attribute = "pantherRole"
    client.create_role(tenant.id, "Analyst")
    client.set_policy(
        tenant.id,
        policy_pb2.TenantPolicy(
            scim_create_disabled=True,
            groups_disabled=True,
            on_scim_delete=policy_pb2.DELETE_ACTION_DEACTIVATE,
            attribute_role=role,
            default_role="Analyst",
            extension_schemas=[
                policy_pb2.ExtensionSchema(
                    schema=USER_SCHEMA,
                    resource_type="User",
                    attributes=[policy_pb2.SchemaAttribute(name="pantherRole", type="string")],
                )
            ],
        ),
    )
    okta = admin_of.get(f"/tenants/{tenant.name}/setup/okta").body
    assert "Push New Users" not in okta and "Push Groups" not in okta
    assert "<li><strong>Create Users</strong></li>" not in okta
    assert 'id="okta-no-groups"' in okta and 'id="no-create"' in okta
    assert "<code>pantherRole</code>" in okta and f"<code>{USER_SCHEMA}</code>" in okta
    assert okta.count("<code>pantherRole</code></td>") == 3  # one Profile Editor row
    assert "Analyst" in okta
    entra = admin_of.get(f"/tenants/{tenant.name}/setup/entra").body
    assert f"<code>{USER_SCHEMA}:pantherRole</code>" in entra
    assert 'id="entra-no-groups"' in entra and "clear <strong>Create</strong>" in entra
    assert "here that DELETE deactivates too" in entra


# -- Live ---------------------------------------------------------------------------------


class EventStream:
    """A server-sent-event client over a real socket (what a browser's EventSource
    does): the console's cookie, Last-Event-ID, and each event's fields."""

    def __init__(self, base: str, path: str, cookie: str, last_event_id: str = "") -> None:
        parts = urllib.parse.urlsplit(base)
        assert parts.hostname and parts.port
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=15)
        headers = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
        headers.append(f"Cookie: {CONSOLE_COOKIE}={cookie}")
        if last_event_id:
            headers.append(f"Last-Event-ID: {last_event_id}")
        self.sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        status = self.file.readline().decode()
        self.status = int(status.split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode().strip()) != "":
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.pending = b""

    def _more(self) -> None:
        if not self.chunked:
            self.pending += self.file.readline()
            return
        size = int(self.file.readline().strip(), 16)
        self.pending += self.file.read(size)
        self.file.readline()

    def next(self) -> dict[str, str]:
        """The next block (an event or a comment), as {field: value}."""
        while b"\n\n" not in self.pending:
            self._more()
        block, self.pending = self.pending.split(b"\n\n", 1)
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.strip()
        return fields

    def next_event(self, name: str = "change") -> dict[str, str]:
        """The next event called `name` (others and keep-alives skipped), within 15 s."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            block = self.next()
            if block.get("event") == name:
                return block
        raise AssertionError(f"no {name!r} event within 15 s")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def streams() -> Iterator[list[EventStream]]:
    opened: list[EventStream] = []
    yield opened
    for s in opened:
        s.close()


def test_live_sends_a_scim_writes_event_and_resumes_after_the_last_one(
    client: IdentityClient,
    tenant: Tenant,
    admin_of: Visitor,
    stack: Stack,
    streams: list[EventStream],
) -> None:
    secret = client.issue_token(tenant.id).secret
    page = admin_of.get(f"/tenants/{tenant.name}/live")
    assert page.status == 200 and 'aria-current="page">Live' in page.body
    assert '<script src="/static/live.js" defer></script>' in page.body
    assert "reload the page" in page.body  # what it says without the script
    revision = client.get_revision(tenant.id).revision
    path = f"/tenants/{tenant.name}/live/events?since={revision}"
    assert f'data-stream="{path}"' in page.body
    stream = EventStream(stack.console_url, path, admin_of.cookie)
    streams.append(stream)
    assert stream.status == 200 and stream.headers["content-type"] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-store"
    assert stream.next()["comment"] == "live"
    status, _, body = scim(stack, tenant, "POST", "/Users", secret, body=new_user("live@x"))
    assert status == 201
    event = stream.next_event()
    data = json.loads(event["data"])
    assert data["type"] == "user.created" and data["resource_id"] == body["id"]
    assert data["summary"] == "live@x" and data["actor"].startswith("token:")
    assert int(event["id"]) == data["revision"] > revision
    stream.close()

    # Two more writes while away; back with Last-Event-ID: the next one, no repeat.
    for name in ("second@x", "third@x"):
        assert scim(stack, tenant, "POST", "/Users", secret, body=new_user(name))[0] == 201
    again = EventStream(stack.console_url, path, admin_of.cookie, last_event_id=event["id"])
    streams.append(again)
    resumed = json.loads(again.next_event()["data"])
    assert resumed["revision"] == data["revision"] + 1 and resumed["summary"] == "second@x"
    assert json.loads(again.next_event()["data"])["summary"] == "third@x"

    # The page itself lists the latest changes (no script needed).
    later = admin_of.get(f"/tenants/{tenant.name}/live").body
    assert later.index("third@x") < later.index("second@x") < later.index("live@x")


@pytest.mark.parametrize(
    ("since", "last_event_id"),
    [("abc", ""), ("-1", ""), ("99999999999999999999", ""), ("", "12x"), ("", "1000000")],
)
def test_a_bad_resume_point_is_a_400(
    tenant: Tenant, admin_of: Visitor, stack: Stack, since: str, last_event_id: str
) -> None:
    path = f"/tenants/{tenant.name}/live/events" + (f"?since={since}" if since else "")
    stream = EventStream(stack.console_url, path, admin_of.cookie, last_event_id=last_event_id)
    try:
        assert stream.status == 400
    finally:
        stream.close()


@pytest.fixture
def quick_console(identity_target: str, stack: Stack, tmp_path: Path) -> Iterator[str]:
    """A console whose idle streams send a keep-alive every 0.2 s."""
    proc, url = start_console(
        identity_target, tmp_path, stack.gateway_url, ADMIN_LIVE_KEEPALIVE_SECONDS="0.2"
    )
    try:
        yield url
    finally:
        proc.stop()


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_stream_ends_with_its_client_and_with_the_session(
    client: IdentityClient,
    tenant: Tenant,
    identity_service: ServiceThread,
    quick_console: str,
    streams: list[EventStream],
) -> None:
    assert identity_service.service is not None
    hub = identity_service.service.streams

    def streams_of_tenant() -> int:  # other tests' streams come and go meanwhile
        return hub.active_streams(tenant.id)

    before = streams_of_tenant()
    assert before == 0
    admin = Visitor(quick_console)
    admin.sign_in(client, tenant.name)
    path = f"/tenants/{tenant.name}/live/events"
    stream = EventStream(quick_console, path, admin.cookie)
    streams.append(stream)
    assert stream.next()["comment"] == "live"
    _until(lambda: streams_of_tenant() == before + 1, "the console watches the tenant")
    assert stream.next().get("comment") == "keep-alive"
    stream.close()
    # The browser went: the console notices at its next keep-alive and ends the Watch.
    _until(lambda: streams_of_tenant() == before, "the Watch ends with its client")

    # A sign-out ends the streams of that session.
    stream = EventStream(quick_console, path, admin.cookie)
    streams.append(stream)
    csrf = admin.get(f"/tenants/{tenant.name}/live").csrf()
    assert admin.post("/signout", {"csrf": csrf}).status == 200
    assert json.loads(stream.next_event("signed-out")["data"])["revision"] >= 0
    _until(lambda: streams_of_tenant() == before, "the Watch ends with the session")


def test_a_busy_tenants_stream_ends_with_the_session_too(
    client: IdentityClient, tenant: Tenant, quick_console: str, streams: list[EventStream]
) -> None:
    # Changes arriving faster than the keep-alive leave no idle moment: the session is
    # asked on a timer all the same, and a signed-out stream ends.
    admin = Visitor(quick_console)
    admin.sign_in(client, tenant.name)
    stream = EventStream(quick_console, f"/tenants/{tenant.name}/live/events", admin.cookie)
    streams.append(stream)
    assert stream.next()["comment"] == "live"
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            client.create_user(tenant.id, User(user_name=f"busy{i}@example.com"))
            i += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        stream.next_event("change")  # the writes are flowing
        csrf = admin.get(f"/tenants/{tenant.name}/live").csrf()
        assert admin.post("/signout", {"csrf": csrf}).status == 200
        stream.next_event("signed-out")
    finally:
        stop.set()
        writer.join(10)


# -- Who may see these pages ----------------------------------------------------------------


def test_a_tenant_admin_sees_no_other_tenants_history_setup_or_live(
    client: IdentityClient, tenant: Tenant, admin_of: Visitor, stack: Stack
) -> None:
    other = client.create_tenant(f"{tenant.name}-other")
    client.record_operation(
        Operation(tenant_id=other.id, method="GET", kind=1, status=200, detail="theirs")
    )
    (theirs,) = client.list_operations(other.id).operations
    missing = admin_of.get("/tenants/no-such-tenant/history")
    assert missing.status == 404
    for ref in (other.name, other.id):
        for path in (
            f"/tenants/{ref}/setup",
            f"/tenants/{ref}/setup/okta",
            f"/tenants/{ref}/setup/entra",
            f"/tenants/{ref}/history",
            f"/tenants/{ref}/history?status=200",
            f"/tenants/{ref}/history/{theirs.id}",
            f"/tenants/{ref}/live",
            f"/tenants/{ref}/live/events",
            f"/tenants/{ref}/live/events?since=0",
        ):
            page = admin_of.get(path)
            assert page.status == 404, (path, page.status)
            assert page.body == missing.body
            assert other.name not in page.body and "theirs" not in page.body
    # Signed out: the sign-in page, never the tenant's data.
    anonymous = Visitor(stack.console_url)
    for path in ("setup", "setup/okta", "history", f"history/{theirs.id}", "live", "live/events"):
        page = anonymous.get(f"/tenants/{tenant.name}/{path}")
        assert page.status == 401 and tenant.id not in page.body, path


# -- the JSON API ---------------------------------------------------------------------------


def test_the_history_and_setup_by_the_api(
    client: IdentityClient, tenant: Tenant, operator_api: ApiClient, stack: Stack
) -> None:
    """The same filters, detail and connection test as the pages, as JSON (each answer
    checked against the OpenAPI document by ApiClient)."""
    base = f"/api/v1/tenants/{tenant.name}"
    setup = operator_api.get(f"{base}/setup")
    assert setup.status == 200
    assert setup.json["scim_base_url"] == f"{stack.gateway_url}/scim/v2/{tenant.name}"
    assert setup.json["connection"] == {
        "first_request": None,
        "latest_request": None,
        "working": False,
    }
    issued = client.issue_token(tenant.id, description="Okta")
    assert scim(stack, tenant, "POST", "/Users", issued.secret, body=new_user("a@x"))[0] == 201
    again = {**new_user("a@x"), "name": {"givenName": "Other"}}
    assert scim(stack, tenant, "POST", "/Users", issued.secret, body=again)[0] == 409
    ops = recorded(client, tenant, lambda ops: len(ops) == 2)
    conflict, first = ops

    answer = operator_api.get(f"{base}/setup").json
    assert answer["connection"]["first_request"]["id"] == first.id
    assert answer["connection"]["latest_request"]["status"] == 409
    assert answer["connection"]["first_request"]["token"] == {
        "id": issued.token.id,
        "prefix": issued.token.prefix,
    }
    assert answer["live_tokens"] == 1 and answer["create_users"] and answer["groups"]

    # The first one's time where clocks are 5 hours ahead: the same instant.
    east = first.time.ToDatetime(tzinfo=UTC).astimezone(timezone(timedelta(hours=5))).isoformat()
    listed = operator_api.get(f"{base}/operations").json
    assert [o["id"] for o in listed["operations"]] == [conflict.id, first.id]
    assert listed["next_page_token"] is None
    for query, expected in (
        ("status=409", [conflict.id]),
        ("outcome=success", [first.id]),
        ("kind=create,search", [conflict.id, first.id]),
        ("kind=update", []),
        (f"since={urllib.parse.quote(east)}", [conflict.id, first.id]),
        (f"until={urllib.parse.quote(east)}", []),
        (f"request_id={first.request_id}", [first.id]),
        ("source=admin", []),
        ("since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00%2B02:00", []),
    ):
        found = operator_api.get(f"{base}/operations?{query}").json["operations"]
        assert [o["id"] for o in found] == expected, query
    one = operator_api.get(f"{base}/operations?page_size=1").json
    rest = operator_api.get(f"{base}/operations?page_size=1&page_token={one['next_page_token']}")
    assert [o["id"] for o in one["operations"] + rest.json["operations"]] == [conflict.id, first.id]
    detail = operator_api.get(f"{base}/operations/{conflict.id}").json
    assert detail["status"] == 409 and detail["scim_type"] == "uniqueness"
    assert detail["detail"] == conflict.detail and detail["kind"] == "create"
    # Bad input: 4xx with a message, never a 5xx.
    for query in (
        "status=abc",
        "status=99",
        "kind=explode",
        "since=yesterday",
        "since=2026-12-04T10:00:00Z&until=2026-12-04T09:00:00Z",
        "page_token=6f1c1d2e-8a4b-4c3d-9e2f-0a1b2c3d4e5f",  # fixed: see above
        "page_size=100000",
        "sort=time",
        "status=401&status=403",
    ):
        bad = operator_api.get(f"{base}/operations?{query}")
        assert bad.status in (400, 422), (query, bad.status)
    assert operator_api.get(f"{base}/operations/{uuid.uuid4()}").status == 404
    assert operator_api.get(f"{base}/operations/x").status == 404
