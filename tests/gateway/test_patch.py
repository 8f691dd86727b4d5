"""PATCH paths and operations (RFC 7644 §3.5.2), without HTTP: the gateway's parse,
applied by the core's patcher (identity_service.patching)."""

from __future__ import annotations

from typing import Any

import pytest

from scim_gateway.errors import ScimError
from scim_gateway.scim.filter import AttrPath, Compare
from scim_gateway.scim.mapping import normalize
from scim_gateway.scim.patch import PatchPath, parse_operations, parse_path

from .catalogue import GROUP_TYPE, USER_TYPE
from .core_patch import apply_patch, plan_group_patch

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def ops(*operations: dict[str, Any]) -> list[Any]:
    return parse_operations({"schemas": [PATCH_OP], "Operations": list(operations)})


def user_doc(**attrs: Any) -> dict[str, Any]:
    return normalize({"userName": "bjensen", **attrs}, USER_TYPE)


# -- path grammar (RFC 7644 §3.5.2, "PATH = attrPath / valuePath [subAttr]") ------------------


def test_rfc7644_3_5_2_path_examples() -> None:
    assert parse_path("members") == PatchPath("", "members", text="members")
    assert parse_path("name.familyName") == PatchPath(
        "", "name", None, "familyName", "name.familyName"
    )
    p = parse_path('addresses[type eq "work"]')
    assert p.attribute == "addresses"
    assert p.value_filter == Compare(AttrPath("", "type"), "eq", "work")
    p = parse_path('members[value eq "2819c223-7f76-453a-919d-413861904646"].displayName')
    assert (p.attribute, p.sub_attribute) == ("members", "displayName")
    p = parse_path(f"{ENT}:manager")
    assert (p.schema, p.attribute) == (ENT, "manager")
    p = parse_path(f"{ENT}:manager.value")
    assert (p.schema, p.attribute, p.sub_attribute) == (ENT, "manager", "value")
    assert parse_path(ENT) == PatchPath(ENT, "", text=ENT)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "[",
        "emails[",
        'emails[type eq "work"',
        'emails[type eq "work"]value',
        'emails[type eq "work"].',
        'emails[type eq "work"].a.b',
        "name.givenName[type eq 1]",
        "a.b.c",
        'emails[type eq "work"] extra',
        "1abc",
        'emails[type eq "w"][value eq "x"]',
        "not:urn:x",
    ],
)
def test_malformed_paths_are_400_invalid_path(text: str) -> None:
    with pytest.raises(ScimError) as exc:
        parse_path(text)
    assert (exc.value.status, exc.value.scim_type) == (400, "invalidPath")


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        ([], "invalidSyntax"),
        ({"schemas": [PATCH_OP]}, "invalidSyntax"),
        ({"schemas": [PATCH_OP], "Operations": []}, "invalidSyntax"),
        ({"schemas": ["urn:x"], "Operations": [{"op": "add", "value": {}}]}, "invalidSyntax"),
        ({"Operations": [{"op": "move", "path": "x"}]}, "invalidSyntax"),
        ({"Operations": [{"op": "add", "path": "title"}]}, "invalidValue"),
        ({"Operations": [{"op": "add", "path": 5, "value": 1}]}, "invalidPath"),
        ({"Operations": ["add"]}, "invalidSyntax"),
    ],
)
def test_malformed_patch_requests(body: Any, scim_type: str) -> None:
    with pytest.raises(ScimError) as exc:
        parse_operations(body)
    assert (exc.value.status, exc.value.scim_type) == (400, scim_type)


def test_ops_and_keys_are_case_insensitive() -> None:
    parsed = parse_operations({"operations": [{"OP": "Replace", "Path": "title", "Value": "x"}]})
    assert parsed[0].op == "replace"


# -- add (RFC 7644 §3.5.2.1) --------------------------------------------------------------


def test_rfc7644_3_5_2_1_add_member_style_value_to_multi_valued() -> None:
    doc = user_doc(emails=[{"value": "a@x", "type": "work"}])
    out = apply_patch(
        USER_TYPE, doc, ops({"op": "add", "path": "emails", "value": [{"value": "b@x"}]})
    )
    assert out["emails"] == [{"value": "a@x", "type": "work"}, {"value": "b@x"}]


def test_rfc7644_3_5_2_1_add_without_path() -> None:
    doc = user_doc()
    out = apply_patch(
        USER_TYPE,
        doc,
        ops(
            {
                "op": "add",
                "value": {
                    "emails": [{"value": "babs@jensen.org", "type": "home"}],
                    "nickname": "Babs",
                },
            }
        ),
    )
    assert out["nickName"] == "Babs"
    assert out["emails"] == [{"value": "babs@jensen.org", "type": "home"}]


def test_add_complex_merges_sub_attributes() -> None:
    doc = user_doc(name={"givenName": "Barbara", "familyName": "Jensen"})
    out = apply_patch(
        USER_TYPE, doc, ops({"op": "add", "path": "name", "value": {"middleName": "J"}})
    )
    assert out["name"] == {"givenName": "Barbara", "familyName": "Jensen", "middleName": "J"}


# -- remove (RFC 7644 §3.5.2.2) --------------------------------------------------------------


def test_rfc7644_3_5_2_2_remove_single_value() -> None:
    out = apply_patch(USER_TYPE, user_doc(title="CEO"), ops({"op": "remove", "path": "title"}))
    assert "title" not in out


def test_rfc7644_3_5_2_2_remove_with_value_filter() -> None:
    doc = user_doc(emails=[{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}])
    out = apply_patch(USER_TYPE, doc, ops({"op": "remove", "path": 'emails[type eq "work"]'}))
    assert out["emails"] == [{"value": "b@x", "type": "home"}]


def test_rfc7644_3_5_2_2_remove_sub_attribute_of_filtered_values() -> None:
    doc = user_doc(emails=[{"value": "a@x", "type": "work", "display": "A"}])
    out = apply_patch(
        USER_TYPE, doc, ops({"op": "remove", "path": 'emails[type eq "work"].display'})
    )
    assert out["emails"] == [{"value": "a@x", "type": "work"}]


def test_rfc7644_3_5_2_2_remove_without_path_is_no_target() -> None:
    with pytest.raises(ScimError) as exc:
        apply_patch(USER_TYPE, user_doc(), ops({"op": "remove"}))
    assert exc.value.scim_type == "noTarget"


def test_remove_extension_attribute() -> None:
    doc = user_doc(**{ENT: {"department": "R&D", "manager": {"value": "m1"}}})
    out = apply_patch(USER_TYPE, doc, ops({"op": "remove", "path": f"{ENT}:manager"}))
    assert out[ENT] == {"department": "R&D"}


# -- replace (RFC 7644 §3.5.2.3) ----------------------------------------------------------------


def test_rfc7644_3_5_2_3_replace_multi_valued_replaces_all() -> None:
    doc = user_doc(emails=[{"value": "a@x"}, {"value": "b@x"}])
    out = apply_patch(
        USER_TYPE, doc, ops({"op": "replace", "path": "emails", "value": [{"value": "c@x"}]})
    )
    assert out["emails"] == [{"value": "c@x"}]


def test_rfc7644_3_5_2_3_replace_filtered_sub_attribute() -> None:
    doc = user_doc(addresses=[{"type": "work", "streetAddress": "old"}, {"type": "home"}])
    out = apply_patch(
        USER_TYPE,
        doc,
        ops({"op": "replace", "path": 'addresses[type eq "work"].streetAddress', "value": "new"}),
    )
    assert out["addresses"] == [{"type": "work", "streetAddress": "new"}, {"type": "home"}]


def test_replace_filtered_creates_missing_element_from_eq_terms() -> None:
    out = apply_patch(
        USER_TYPE,
        user_doc(),
        ops({"op": "replace", "path": 'emails[type eq "work"].value', "value": "w@x"}),
    )
    assert out["emails"] == [{"type": "work", "value": "w@x"}]


def test_replace_filtered_without_match_and_not_eq_is_no_target() -> None:
    with pytest.raises(ScimError) as exc:
        apply_patch(
            USER_TYPE,
            user_doc(),
            ops({"op": "replace", "path": 'emails[value co "x"].type', "value": "work"}),
        )
    assert exc.value.scim_type == "noTarget"


def test_replace_without_path_with_path_keys() -> None:
    out = apply_patch(
        USER_TYPE,
        user_doc(),
        ops(
            {
                "op": "replace",
                "value": {
                    "name.givenName": "Ada",
                    'emails[type eq "work"].value': "ada@x",
                    f"{ENT}:department": "Math",
                    "active": "False",
                },
            }
        ),
    )
    assert out["name"] == {"givenName": "Ada"}
    assert out["emails"] == [{"type": "work", "value": "ada@x"}]
    assert out[ENT] == {"department": "Math"}
    assert out["active"] is False


def test_setting_primary_clears_other_primaries() -> None:
    doc = user_doc(emails=[{"value": "a@x", "primary": True}, {"value": "b@x"}])
    out = apply_patch(
        USER_TYPE,
        doc,
        ops({"op": "replace", "path": 'emails[value eq "b@x"].primary', "value": True}),
    )
    # RFC 7644 §3.5.2: the server sets `primary` to false on the value that had it.
    assert out["emails"] == [{"value": "a@x", "primary": False}, {"value": "b@x", "primary": True}]


@pytest.mark.parametrize(
    ("op", "scim_type"),
    [
        ({"op": "replace", "path": "id", "value": "x"}, "mutability"),
        ({"op": "replace", "path": "meta.created", "value": "x"}, "mutability"),
        ({"op": "add", "path": "groups", "value": [{"value": "g"}]}, "mutability"),
        ({"op": "replace", "path": "nope", "value": "x"}, "invalidPath"),
        ({"op": "replace", "path": "name.nope", "value": "x"}, "invalidPath"),
        ({"op": "replace", "path": 'title[value eq "x"]', "value": "x"}, "invalidPath"),
        ({"op": "replace", "path": "active", "value": "yes"}, "invalidValue"),
        ({"op": "replace", "path": "title", "value": 5}, "invalidValue"),
        ({"op": "replace", "path": "emails", "value": [{"nope": 1}]}, "invalidValue"),
        ({"op": "replace", "value": "not an object"}, "invalidValue"),
        ({"op": "replace", "path": f"{ENT}:nope", "value": "x"}, "invalidPath"),
        (
            {
                "op": "replace",
                "path": "urn:ietf:params:scim:schemas:core:2.0:Group:displayName",
                "value": "x",
            },
            "invalidPath",
        ),
    ],
)
def test_bad_operations(op: dict[str, Any], scim_type: str) -> None:
    with pytest.raises(ScimError) as exc:
        apply_patch(USER_TYPE, user_doc(), ops(op))
    assert (exc.value.status, exc.value.scim_type) == (400, scim_type)


def test_read_only_keys_in_pathless_value_are_ignored() -> None:
    out = apply_patch(
        USER_TYPE,
        user_doc(),
        ops({"op": "replace", "value": {"id": "x", "meta": {}, "displayName": "B"}}),
    )
    assert out["displayName"] == "B"


def test_custom_extension_paths() -> None:
    urn = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"
    out = apply_patch(
        USER_TYPE,
        user_doc(),
        ops({"op": "add", "path": f"{urn}:badge", "value": "42"}),
    )
    assert out[urn] == {"badge": "42"}
    out = apply_patch(USER_TYPE, out, ops({"op": "remove", "path": f"{urn}:badge"}))
    assert out[urn] == {}


def test_apply_patch_does_not_modify_its_input() -> None:
    doc = user_doc(emails=[{"value": "a@x"}])
    apply_patch(USER_TYPE, doc, ops({"op": "remove", "path": "emails"}))
    assert doc["emails"] == [{"value": "a@x"}]


# -- groups: one UpdateGroup ------------------------------------------------------------------


def group_doc() -> dict[str, Any]:
    return normalize({"displayName": "eng"}, GROUP_TYPE)


def test_group_member_ops_become_add_remove_clear() -> None:
    plan = plan_group_patch(
        GROUP_TYPE,
        group_doc(),
        ops(
            {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
            {"op": "remove", "path": 'members[value eq "u3"]'},
            {"op": "Remove", "path": "members", "value": [{"value": "u2"}]},
        ),
    )
    assert set(plan.add_members) == {"u1"}
    assert plan.remove_members == {"u2", "u3"}
    assert not plan.clear_members


def test_group_replace_members_is_clear_then_add() -> None:
    plan = plan_group_patch(
        GROUP_TYPE,
        group_doc(),
        ops({"op": "replace", "path": "members", "value": [{"value": "u9"}]}),
    )
    assert plan.clear_members and set(plan.add_members) == {"u9"}


def test_group_remove_members_without_filter_clears() -> None:
    plan = plan_group_patch(GROUP_TYPE, group_doc(), ops({"op": "remove", "path": "members"}))
    assert plan.clear_members and not plan.add_members


def test_group_rename_with_read_only_id_in_value() -> None:
    plan = plan_group_patch(
        GROUP_TYPE,
        group_doc(),
        ops({"op": "replace", "value": {"id": "abc", "displayName": "new"}}),
    )
    assert plan.doc["displayName"] == "new"
    assert not plan.touches_members


def test_group_member_filter_other_than_value_eq_is_refused() -> None:
    with pytest.raises(ScimError) as exc:
        plan_group_patch(
            GROUP_TYPE, group_doc(), ops({"op": "remove", "path": 'members[display co "a"]'})
        )
    assert exc.value.scim_type == "invalidPath"
