"""Hostile and unusual input found by probing the gateway against the real core:
each is a precise 4xx and changes nothing, never a 500."""

from __future__ import annotations

import asyncio

import pytest

from scim_gateway.errors import ScimError
from scim_gateway.http import NO_VERSION, expected_version
from scim_gateway.scim.filter import parse_filter
from scim_gateway.scim.patch import parse_operations

from .catalogue import USER_TYPE
from .conftest import PATCH_OP, USER_SCHEMA, ScimClient, assert_scim_error
from .core_patch import apply_patch

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


@pytest.mark.parametrize("start", ["2147483648", "99999999999999999999"])
def test_start_index_past_int32_is_an_empty_page_not_500(scim: ScimClient, start: str) -> None:
    scim.create_user("ada@example.com")
    r = scim.get("/Users", params={"startIndex": start, "count": "5"})
    assert r.status_code == 200, r.text
    assert r.json["totalResults"] == 1
    assert r.json["Resources"] == []
    r = scim.post(
        "/.search", {"schemas": [SEARCH], "startIndex": min(int(start), 2**63 - 1), "count": 5}
    )
    assert r.status_code == 200, r.text
    assert r.json["Resources"] == []


def test_nul_character_in_a_body_is_400_and_nothing_is_stored(scim: ScimClient) -> None:
    # PostgreSQL text cannot hold U+0000: it must be refused before the core.
    r = scim.post("/Users", {"schemas": [USER_SCHEMA], "userName": "a\u0000b"})
    assert_scim_error(r, 400, "invalidValue")
    r = scim.post("/Users", {"userName": "ada@example.com", "urn:acme:2.0:User": {"k\u0000": 1}})
    assert_scim_error(r, 400, "invalidValue")
    assert scim.get("/Users").json["totalResults"] == 0
    user = scim.create_user("ada@example.com", title="Countess")
    body = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "title", "value": "x\u0000"}],
    }
    assert_scim_error(scim.patch(f"/Users/{user['id']}", body), 400, "invalidValue")
    after = scim.get(f"/Users/{user['id']}").json
    assert after["title"] == "Countess"
    assert after["meta"]["version"] == user["meta"]["version"]


def test_nul_character_in_a_filter_string_is_invalid_filter(scim: ScimClient) -> None:
    r = scim.get("/Users", params={"filter": 'userName eq "a\\u0000b"'})
    assert_scim_error(r, 400, "invalidFilter")
    with pytest.raises(ScimError) as exc:
        parse_filter('title co "\\u0000"')
    assert exc.value.scim_type == "invalidFilter"


def test_deeply_nested_extension_value_is_400_and_nothing_is_stored(scim: ScimClient) -> None:
    # 60 levels fit in a tiny body but not in a protobuf Struct the gateway can
    # decode again: stored, the user would turn every later read into a 500.
    depth = 60
    raw = b'{"userName":"deep","urn:acme:2.0:User":{"a":' + b"[" * depth + b"]" * depth + b"}}"
    assert_scim_error(scim.post("/Users", raw=raw), 400, "invalidSyntax")
    user = scim.create_user("ada@example.com")
    value = b"{" + b'"a":{' * depth + b"}" * depth + b"}"
    raw = b'{"Operations":[{"op":"add","path":"urn:acme:2.0:User:x","value":' + value + b"}]}"
    assert_scim_error(scim.patch(f"/Users/{user['id']}", raw=raw), 400, "invalidSyntax")
    listed = scim.get("/Users")
    assert listed.status_code == 200, listed.text
    assert listed.json["totalResults"] == 1


def test_moderately_nested_extension_value_is_accepted(scim: ScimClient) -> None:
    value = {"a": [{"b": {"c": [1, 2]}}]}
    user = scim.create_user("ada@example.com", **{"urn:acme:2.0:User": value})
    assert scim.get(f"/Users/{user['id']}").json["urn:acme:2.0:User"] == value


def test_pathless_patch_with_core_attributes_under_their_schema_urn() -> None:
    doc = {"userName": "bjensen", "title": "Tour Guide"}
    patched = apply_patch(
        USER_TYPE,
        doc,
        parse_operations(
            {"Operations": [{"op": "replace", "value": {USER_SCHEMA: {"title": "Countess"}}}]}
        ),
    )
    assert patched == {"userName": "bjensen", "title": "Countess"}


@pytest.mark.parametrize("tag", ['W/"abc"', '"v1"', '"-3"', '"1.0"', '""', '"²"'])
def test_if_match_naming_no_version_is_412_and_404_for_a_missing_resource(
    scim: ScimClient, tag: str
) -> None:
    # Our ETags are versions: any other tag matches nothing. Still RFC 7232 §5: a
    # resource that does not exist is 404, not 412.
    user = scim.create_user("ada@example.com", title="Countess")
    group = scim.create_group("devs")
    h = {"If-Match": tag}
    replace = {"Operations": [{"op": "replace", "path": "title", "value": "Queen"}]}
    assert_scim_error(scim.patch(f"/Users/{user['id']}", replace, headers=h), 412)
    r = scim.put(f"/Users/{user['id']}", {"userName": "ada@example.com"}, headers=h)
    assert_scim_error(r, 412)
    assert_scim_error(scim.put(f"/Groups/{group['id']}", {"displayName": "x"}, headers=h), 412)
    assert_scim_error(scim.delete(f"/Groups/{group['id']}", headers=h), 412)
    assert scim.get(f"/Users/{user['id']}").json["title"] == "Countess"
    assert scim.get(f"/Groups/{group['id']}").json["displayName"] == "devs"
    gone = "4b0e4a36-7d3c-4c1e-9d0e-000000000000"
    assert_scim_error(scim.delete(f"/Users/{gone}", headers=h), 404)
    assert_scim_error(scim.patch(f"/Groups/{gone}", replace, headers=h), 404)


def test_if_match_with_several_versions_passes_when_one_is_current(scim: ScimClient) -> None:
    user = scim.create_user("ada@example.com", title="Countess")
    version = int(user["meta"]["version"].strip('W/"'))
    stale = {"If-Match": f'W/"{version + 5}", "x", W/"{version + 9}"'}
    replace = {"Operations": [{"op": "replace", "path": "title", "value": "Queen"}]}
    assert_scim_error(scim.patch(f"/Users/{user['id']}", replace, headers=stale), 412)
    ok = {"If-Match": f'W/"{version + 5}", W/"{version}"'}
    assert scim.patch(f"/Users/{user['id']}", replace, headers=ok).status_code == 200
    assert scim.get(f"/Users/{user['id']}").json["title"] == "Queen"


def test_if_match_reads_the_resource_only_for_several_versions() -> None:
    asyncio.run(_if_match_reads())


async def _if_match_reads() -> None:
    reads: list[int] = []

    async def current() -> int:
        reads.append(7)
        return 7

    assert await expected_version(None, current) == 0
    assert await expected_version({"*"}, current) == 0
    assert await expected_version({"3"}, current) == 3
    assert await expected_version({"abc"}, current) == NO_VERSION
    assert await expected_version({"0", "x"}, current) == NO_VERSION
    assert reads == []
    assert await expected_version({"3", "7"}, current) == 7
    assert await expected_version({"3", "4"}, current) == NO_VERSION
    assert reads == [7, 7]


@pytest.mark.parametrize("tag", ['W/"0"', '"0"', '"00"'])
def test_if_match_version_zero_is_412_not_a_skipped_check(scim: ScimClient, tag: str) -> None:
    # The core reads expected_version 0 as "no check"; no resource has version 0.
    user = scim.create_user("ada@example.com", title="Countess")
    group = scim.create_group("devs")
    h = {"If-Match": tag}
    assert_scim_error(scim.delete(f"/Users/{user['id']}", headers=h), 412)
    assert_scim_error(scim.delete(f"/Groups/{group['id']}", headers=h), 412)
    r = scim.put(f"/Users/{user['id']}", {"userName": "ada@example.com"}, headers=h)
    assert_scim_error(r, 412)
    assert_scim_error(scim.put(f"/Groups/{group['id']}", {"displayName": "x"}, headers=h), 412)
    bulk = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [{"method": "DELETE", "path": f"/Users/{user['id']}", "version": tag}],
    }
    assert scim.post("/Bulk", bulk).json["Operations"][0]["status"] == "412"
    after = scim.get(f"/Users/{user['id']}").json
    assert after["title"] == "Countess"
    assert scim.get(f"/Groups/{group['id']}").json["displayName"] == "devs"
