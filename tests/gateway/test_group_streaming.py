"""A group's members streamed page by page (GetGroup without members, then
ListMembers pages into `resp.stream`) give exactly the document the whole
response gives, for every projection; errors before the body starts are SCIM
errors. Runs against the real core on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import falcon.testing
import orjson
import pytest

from scim_gateway.app import create_app
from scim_gateway.scim.mapping import (
    MEMBERS_SLOT,
    group_to_scim,
    member_to_scim,
    members_json,
    members_json_chunks,
    split_at_members,
)
from scim_gateway.settings import Settings
from scim_identity_api.v1 import groups_pb2, tenants_pb2
from scim_identity_client import AsyncIdentityClient, IdentityClient
from scim_identity_client.errors import NotFound, Unavailable
from scim_identity_client.types import Tenant

from .conftest import GROUP_SCHEMA, PATCH_OP, ScimClient, assert_scim_error, core_client

PAGE = 3
MEMBERS = 11  # ten users and one nested group: four pages

BASE = "https://scim.example.com/scim/v2/acme"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


class Spy:
    """Records the client calls the gateway makes (and can make ListMembers fail).

    It patches the async client's class: every gateway app of the test is watched
    (tests reset it before the request they look at)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        #: (include_members, member_limit) of each GetGroup
        self.get_group: list[tuple[bool, int]] = []
        self.list_members: list[int] = []  # page_size of each ListMembers walk
        self.fail_after: int | None = None  # members yielded before a failure
        self.fail_with: Exception = Unavailable("the core went away")
        self.before_list: Callable[[], object] | None = None  # runs before ListMembers
        real_get, real_list = AsyncIdentityClient.get_group, AsyncIdentityClient.list_members

        async def get_group(
            client: AsyncIdentityClient,
            *args: Any,
            include_members: bool = True,
            member_limit: int = 0,
            **kw: Any,
        ) -> Any:
            self.get_group.append((include_members, member_limit))
            return await real_get(
                client, *args, include_members=include_members, member_limit=member_limit, **kw
            )

        async def list_members(
            client: AsyncIdentityClient, *args: Any, page_size: int = 1000, **kw: Any
        ) -> AsyncIterator[Any]:
            self.list_members.append(page_size)
            if self.before_list is not None:
                self.before_list()
            i = 0
            async for m in real_list(client, *args, page_size=page_size, **kw):
                if self.fail_after is not None and i >= self.fail_after:
                    raise self.fail_with
                yield m
                i += 1
            if self.fail_after is not None:
                raise self.fail_with

        monkeypatch.setattr(AsyncIdentityClient, "get_group", get_group)
        monkeypatch.setattr(AsyncIdentityClient, "list_members", list_members)

    def reset(self) -> None:
        self.get_group.clear()
        self.list_members.clear()


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


@pytest.fixture
def streaming(
    settings: Settings,
    client: IdentityClient,
    tenant: Tenant,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> ScimClient:
    """The gateway streaming members in pages of PAGE."""
    app = create_app(
        dataclasses.replace(settings, member_page_size=PAGE), core_client(client.target)
    )
    return ScimClient(app, f"/scim/v2/{tenant.name}", token)


@pytest.fixture
def whole(settings: Settings, client: IdentityClient, tenant: Tenant, token: str) -> ScimClient:
    """The gateway without streaming: every response built whole (as before)."""
    app = create_app(dataclasses.replace(settings, member_page_size=0), core_client(client.target))
    return ScimClient(app, f"/scim/v2/{tenant.name}", token)


def _group(scim: ScimClient, members: int) -> dict[str, Any]:
    """A group of `members - 1` users (display names of every kind) and one nested group."""
    nested = scim.create_group("nested")
    ids = []
    for i in range(members - 1):
        attrs: dict[str, Any] = {}
        if i % 3 == 0:
            attrs["displayName"] = f'Zoë "{i}" \u2603 \\ </script>'
        elif i % 3 == 1:
            attrs["displayName"] = f"user {i}"
        # else: no displayName (the member's display is the userName)
        ids.append(scim.create_user(f"user{i}@example.com", **attrs)["id"])
    ids.insert(4, nested["id"])
    r = scim.post(
        "/Groups",
        {
            "schemas": [GROUP_SCHEMA],
            "displayName": 'Big "team" \u00e9',
            "externalId": "ext-1",
            "members": [{"value": m} for m in ids],
            "urn:example:params:scim:schemas:extension:acme:Group": {"costCenter": "42"},
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json)


def _streamed(r: falcon.testing.Result) -> bool:
    # A streamed body has no length known in advance.
    return "content-length" not in r.headers


QUERIES = [
    "",
    "attributes=members",
    "excludedAttributes=members",
    "attributes=displayName",
    "attributes=members,displayName",
    "attributes=displayName,members",
    "excludedAttributes=displayName,externalId",
    "excludedAttributes=urn:example:params:scim:schemas:extension:acme:Group",
    "attributes=urn:ietf:params:scim:schemas:core:2.0:Group:members",
    "attributes=MEMBERS",
    # Projections into members' sub-attributes are answered whole.
    "attributes=members.value",
    "attributes=members.display,members.type",
    "excludedAttributes=members.display",
    "attributes=members&excludedAttributes=members",
]


@pytest.mark.parametrize("query", QUERIES)
def test_streamed_get_is_the_whole_document(
    streaming: ScimClient, whole: ScimClient, spy: Spy, query: str
) -> None:
    group = _group(whole, MEMBERS)
    path = f"/Groups/{group['id']}"
    expected = whole.get(path, query_string=query)
    assert expected.status_code == 200, expected.text
    assert not _streamed(expected)
    spy.reset()

    got = streaming.get(path, query_string=query)

    assert got.status_code == 200, got.text
    assert got.content == expected.content  # byte for byte
    assert got.headers["etag"] == expected.headers["etag"] == group["meta"]["version"]
    assert got.headers["content-type"] == expected.headers["content-type"]
    doc = got.json
    shows_whole_members = "members" in doc and "members." not in query
    assert _streamed(got) == shows_whole_members
    if shows_whole_members:
        # Members asked for up to a page: the group came without them...
        assert spy.get_group == [(True, PAGE)]
        assert spy.list_members == [PAGE]  # ...then its members page by page
        assert [m["value"] for m in doc["members"]] == [m["value"] for m in group["members"]]
        assert len(doc["members"]) == MEMBERS
    elif "members" not in doc and "excludedAttributes=members" in query.split("&"):
        assert spy.list_members == []  # members not shown: not read


def test_streamed_group_lists_members_as_before(
    streaming: ScimClient, whole: ScimClient, client: IdentityClient, tenant: Tenant
) -> None:
    group = _group(whole, MEMBERS)
    r = streaming.get(f"/Groups/{group['id']}")
    assert _streamed(r)
    # The document of the group read whole (one GetGroup) with a dict per member.
    stored = client.get_group(tenant.id, group["id"], include_members=True)
    base = f"http://falconframework.org/scim/v2/{tenant.name}"
    assert r.content == orjson.dumps(group_to_scim(stored, base))
    doc = r.json
    assert doc == group  # the create response (members as they were added)
    kinds = {m["type"] for m in doc["members"]}
    assert kinds == {"User", "Group"}
    for m in doc["members"]:
        assert set(m) == {"value", "$ref", "display", "type"}
        assert m["$ref"].endswith(f"/{m['type']}s/{m['value']}")


@pytest.mark.parametrize("members", [0, 1, PAGE, PAGE + 1, 2 * PAGE, 2 * PAGE + 1])
def test_page_boundaries(streaming: ScimClient, whole: ScimClient, spy: Spy, members: int) -> None:
    ids = [whole.create_user(f"u{i}@example.com")["id"] for i in range(members)]
    group = whole.create_group("g", ids)
    path = f"/Groups/{group['id']}"
    expected = whole.get(path)
    spy.reset()
    got = streaming.get(path)
    assert got.status_code == 200
    assert got.content == expected.content
    assert [m["value"] for m in got.json["members"]] == ids
    # Only a group with more than one page is streamed; one of up to a page came
    # whole with the one GetGroup.
    assert _streamed(got) == (members > PAGE)
    assert spy.get_group == [(True, PAGE)]
    assert spy.list_members == ([] if members <= PAGE else [PAGE])


def test_create_replace_and_patch_responses_stream_too(
    streaming: ScimClient, whole: ScimClient
) -> None:
    ids = [whole.create_user(f"u{i}@example.com")["id"] for i in range(2 * PAGE)]
    body = {
        "schemas": [GROUP_SCHEMA],
        "displayName": "g",
        "members": [{"value": m} for m in ids],
    }
    created = streaming.post("/Groups", body)
    assert created.status_code == 201, created.text
    assert _streamed(created)
    gid = created.json["id"]
    assert created.headers["location"] == created.json["meta"]["location"]
    assert created.headers["etag"] == created.json["meta"]["version"]
    assert created.content == whole.get(f"/Groups/{gid}").content

    extra = whole.create_user("extra@example.com")["id"]
    patch = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": extra}]}],
    }
    patched = streaming.patch(f"/Groups/{gid}", patch, query_string="attributes=members")
    assert patched.status_code == 200, patched.text
    assert _streamed(patched)
    assert patched.content == whole.get(f"/Groups/{gid}", query_string="attributes=members").content
    assert [m["value"] for m in patched.json["members"]] == [*ids, extra]
    # Without `attributes=members`, a PATCH of a group larger than a page answers
    # RFC 7644 §3.5.2's 204 (it reads no members); a smaller one is 200 with them all.
    plain = streaming.patch(
        f"/Groups/{gid}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "displayName", "value": "h"}],
        },
    )
    assert plain.status_code == 204 and not plain.content, plain.text
    assert plain.headers["etag"] == whole.get(f"/Groups/{gid}").json["meta"]["version"]

    replaced = streaming.put(f"/Groups/{gid}", {**body, "displayName": "r"})
    assert replaced.status_code == 200, replaced.text
    assert _streamed(replaced)
    assert replaced.content == whole.get(f"/Groups/{gid}").content


def test_if_none_match_reads_no_members(streaming: ScimClient, whole: ScimClient, spy: Spy) -> None:
    group = _group(whole, MEMBERS)
    spy.reset()
    r = streaming.get(f"/Groups/{group['id']}", headers={"If-None-Match": group["meta"]["version"]})
    assert r.status_code == 304
    assert r.headers["etag"] == group["meta"]["version"]
    assert spy.list_members == []
    assert spy.get_group == [(False, 0)]  # the version alone decided it


def test_errors_before_the_body_are_scim_errors(
    streaming: ScimClient, whole: ScimClient, client: IdentityClient, tenant: Tenant, spy: Spy
) -> None:
    group = _group(whole, MEMBERS)
    path = f"/Groups/{group['id']}"
    assert_scim_error(streaming.get("/Groups/00000000-0000-0000-0000-000000000000"), 404)

    # The core fails the first ListMembers page.
    spy.fail_after, spy.fail_with = 0, NotFound("no group with that id in this tenant")
    assert_scim_error(streaming.get(path), 404)
    # The core is down when the first pages are read.
    spy.fail_after, spy.fail_with = PAGE, Unavailable("the core went away")
    r = streaming.get(path)
    assert r.status_code == 503, r.text
    assert_scim_error(r, 503)
    spy.fail_after = None

    # The group is deleted between GetGroup and the first ListMembers page.
    other = whole.create_group("other", [m["value"] for m in group["members"]])
    spy.before_list = lambda: client.delete_group(tenant.id, other["id"])
    assert_scim_error(streaming.get(f"/Groups/{other['id']}"), 404)
    spy.before_list = None

    bad = ScimClient(streaming.app, streaming.base, "scim_not-a-token")
    assert_scim_error(bad.get(path), 401)
    users_only = client.issue_token(
        tenant.id, scope=tenants_pb2.TOKEN_SCOPE_USERS_ONLY, description="users only"
    ).secret
    refused = ScimClient(streaming.app, streaming.base, users_only).get(path)
    assert refused.status_code == 403, refused.text
    assert refused.json["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_a_failure_after_the_body_started_cuts_it_short(
    streaming: ScimClient, whole: ScimClient, spy: Spy, caplog: pytest.LogCaptureFixture
) -> None:
    group = _group(whole, MEMBERS)
    spy.fail_after = 2 * PAGE + 1  # the first two pages and one more member were read
    with caplog.at_level(logging.ERROR, "scim_gateway"), pytest.raises(Unavailable):
        # The status is sent: the exception reaches the ASGI server, which closes
        # the connection without ending the chunked body.
        streaming.get(f"/Groups/{group['id']}")
    assert any("cut short" in r.getMessage() for r in caplog.records)


def test_bulk_results_are_never_streamed(streaming: ScimClient, whole: ScimClient) -> None:
    ids = [whole.create_user(f"u{i}@example.com")["id"] for i in range(2 * PAGE)]
    r = streaming.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g",
                    "data": {
                        "schemas": [GROUP_SCHEMA],
                        "displayName": "bulk",
                        "members": [{"value": m} for m in ids],
                    },
                }
            ],
        },
    )
    assert r.status_code == 200, r.text
    assert not _streamed(r)
    (op,) = r.json["Operations"]
    assert op["status"] == "201", op
    assert op["location"].rpartition("/")[2]
    gid = op["location"].rpartition("/")[2]
    assert [m["value"] for m in streaming.get(f"/Groups/{gid}").json["members"]] == ids


# -- the encoding pieces ------------------------------------------------------------------


def _members(n: int) -> list[groups_pb2.Member]:
    kinds = [groups_pb2.MEMBER_TYPE_USER, groups_pb2.MEMBER_TYPE_GROUP, 0]
    return [
        groups_pb2.Member(value=f"m{i}", type=kinds[i % 3], display="" if i % 2 else f'D "{i}"')
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 6, 7])
@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_member_chunks_join_to_the_array(n: int, chunk: int) -> None:
    members = _members(n)
    pieces = list(members_json_chunks(members, BASE, chunk))
    joined = b"".join(pieces)
    assert joined == orjson.dumps([member_to_scim(m, BASE) for m in members])
    assert joined == orjson.dumps(members_json(members, BASE))
    assert len(pieces) == (1 if n == 0 else -(-n // chunk) + 1)


def test_split_at_members_survives_projection_copies_and_hostile_strings() -> None:
    doc = {
        "schemas": ["s"],
        "id": "x\x00y",
        "displayName": 'a:\x00"members"',
        "members": MEMBERS_SLOT,
        "meta": {"v": 1},
    }
    head, tail = split_at_members(copy.deepcopy(doc)) or (b"", b"")
    assert head + b"[]" + tail == orjson.dumps({**doc, "members": []})
    assert split_at_members({"id": "x"}) is None
