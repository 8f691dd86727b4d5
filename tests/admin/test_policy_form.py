"""The console's policy forms <-> TenantPolicy, without a server: what a form shows
saves back unchanged, rows are removed and added one at a time, the stored policy's
other parts are kept, and values no page offers are refused before the core."""

from __future__ import annotations

import pytest

from identity_admin import policy_form as pf
from scim_identity_client.types import (
    AttributeMapping,
    AttributePath,
    AttributeRoleRule,
    DeleteAction,
    ExtensionSchema,
    GroupRoleRule,
    LastRoleAction,
    LocalEdits,
    MappingKind,
    TenantPolicy,
    UniqueIdentifier,
)

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
FULL = TenantPolicy(
    group_role_rules=[
        GroupRoleRule(
            pattern="BigPanda_{org}_BPRole_{role}", org="Acme", underscores_are_spaces=True
        ),
        GroupRoleRule(pattern="Role-{role}"),
    ],
    attribute_role=AttributeRoleRule(path=AttributePath(schema=CORE, attribute="pantherRole")),
    on_last_scim_role_removed=LastRoleAction.LAST_ROLE_ACTION_DELETE,
    on_scim_delete=DeleteAction.DELETE_ACTION_DEACTIVATE,
    unique_identifier=UniqueIdentifier.UNIQUE_IDENTIFIER_EMAIL,
    scim_create_disabled=True,
    local_edits=LocalEdits.LOCAL_EDITS_REFUSED,
    default_role="Member",
    groups_disabled=True,
    unique_email=True,
)
KEPT = TenantPolicy(
    extension_schemas=[ExtensionSchema(schema=CORE, resource_type="User")],
    user_mappings=[AttributeMapping(field="x", source=AttributePath(attribute="userName"))],
)


def test_a_form_saves_back_what_it_shows_and_keeps_the_rest() -> None:
    form = dict(pf.rules_fields(FULL))
    back = pf.rules_from_form(form, KEPT)
    expected = TenantPolicy()
    expected.CopyFrom(KEPT)
    expected.MergeFrom(FULL)
    assert back == expected
    assert pf.rules_from_form(dict(pf.rules_fields(TenantPolicy())), FULL) == TenantPolicy()
    assert pf.version(back) == pf.version(expected) != pf.version(KEPT)


def test_rules_are_removed_and_added_a_row_at_a_time() -> None:
    form = dict(pf.rules_fields(FULL))
    view = pf.rules_view(FULL)
    assert [r.pattern for r in view["rows"]] == [  # type: ignore[attr-defined]
        "BigPanda_{org}_BPRole_{role}",
        "Role-{role}",
        "",  # the row for a new rule
    ]
    form |= {"rule-0-remove": "on", "rule-2-pattern": "New_{role}", "rule-2-org": ""}
    back = pf.rules_from_form(form, TenantPolicy())
    assert [r.pattern for r in back.group_role_rules] == ["Role-{role}", "New_{role}"]
    assert pf.changed_parts(FULL, back) == "group_role_rules"


@pytest.mark.parametrize(
    "bad",
    [
        {"on_scim_delete": "explode"},
        {"local_edits": ""},
        {"default_role": "x" * 300},
        {"rule-0-pattern": "a\x00b"},
        {f"rule-{i}-pattern": "X_{role}" for i in range(pf.MAX_ROWS + 1)},
    ],
)
def test_values_no_page_offers_are_refused(bad: dict[str, str]) -> None:
    form = dict(pf.rules_fields(FULL)) | bad
    with pytest.raises(pf.FormError):
        pf.rules_from_form(form, TenantPolicy())


def test_mappings_in_big_acls_terms() -> None:
    kind, m = pf.mapping_from_form(
        {
            "type": "user",
            "field": "email",
            "attribute": "emails",
            "sub_attribute": "value",
            "kind": "simple",
            "primary_only": "on",
        }
    )
    assert kind == "user" and pf.source_text(m) == "emails[primary].value"
    _, members = pf.mapping_from_form(
        {"type": "group", "field": "m", "attribute": "members", "kind": "list"}
    )
    assert members.kind == MappingKind.MAPPING_KIND_LIST_OF_REFERENCES
    assert pf.source_text(members) == "members[]" and pf.kind_label(members) == "List of references"
    policy = pf.with_mapping(KEPT, "user", m)
    assert [x.field for x in policy.user_mappings] == ["x", "email"]
    policy = pf.with_mapping(policy, "user", None, replacing="x")
    assert [x.field for x in policy.user_mappings] == ["email"]
    assert [x.field for x in KEPT.user_mappings] == ["x"]  # copied, never changed in place
    for bad in ({"type": "robot", "kind": "simple"}, {"type": "user", "kind": "magic"}):
        with pytest.raises(pf.FormError):
            pf.mapping_from_form(bad)
