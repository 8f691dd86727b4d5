"""Any sequence of PATCHes applied by the core (PatchUser, both databases) leaves the
user the same as the same sequence applied to its JSON document by a small
reference implementation of RFC 7644 §3.5.2 written here, independently of
identity_service.patching."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity_service.domain.patching import user_document
from identity_service.schema import USER_TYPE
from scim_identity_api.v1 import common_pb2
from scim_identity_client import IdentityClient, InvalidArgument
from scim_identity_client.types import (
    ExtensionSchema,
    Group,
    SchemaAttribute,
    Tenant,
    TenantPolicy,
    User,
)

from .test_events import read_events

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SIMPLE = ("title", "nickName", "displayName", "locale")
TEXT = st.sampled_from(["a", "B", "c c", "Dé"])
EMAIL = st.sampled_from(["x@e.org", "Y@e.org", "z@e.org"])
KIND = st.sampled_from(["work", "home"])

# -- the reference: RFC 7644 §3.5.2 on a plain JSON document ------------------------------


def _ref_apply(doc: dict[str, Any], op: dict[str, Any]) -> None:
    kind, path, value = op["op"], op["path"], copy.deepcopy(op.get("value"))
    if (value is None and "value" in op) or value == []:  # §3.5.2: no value to set
        if kind == "replace":
            doc.pop(path, None)
        return
    if path in SIMPLE or path == "active":
        if kind == "remove":
            doc.pop(path, None)
        else:
            doc[path] = value
    elif path in ("name.givenName", "name.familyName"):
        sub = path.split(".")[1]
        name = doc.setdefault("name", {})
        if kind == "remove":
            name.pop(sub, None)
        else:
            name[sub] = value
    elif path == f"{ENT}:department":
        ent = doc.setdefault(ENT, {})
        if kind == "remove":
            ent.pop("department", None)
        else:
            ent["department"] = value
    elif path == "emails":
        if kind == "remove" and value is not None:  # Entra ID: the listed values go
            drop = {str(d.get("value", "")).lower() for d in value}
            doc["emails"] = [e for e in doc.get("emails", []) if e["value"].lower() not in drop]
        elif kind == "remove":
            doc.pop("emails", None)
        elif kind == "add":  # §3.5.2.1: added to the set, no duplicates
            emails = doc.setdefault("emails", [])
            emails += [v for v in value if v not in emails]
            _ref_one_primary(emails, value)
        else:  # §3.5.2.3: the set replaced
            doc["emails"] = list(value)
            _ref_one_primary(doc["emails"], value)
    elif path.startswith("emails[value eq "):  # remove the matching values
        target = path.split('"')[1].lower()
        doc["emails"] = [e for e in doc.get("emails", []) if e["value"].lower() != target]
    elif path.startswith("emails[type eq "):  # set on matches, else create
        kind_ = path.split('"')[1]
        emails = doc.setdefault("emails", [])
        hits = [e for e in emails if e.get("type", "").lower() == kind_]
        if path.endswith(".value"):
            new = {"value": value}
        else:  # the whole value: an object, or a list of exactly one
            new = value[0] if isinstance(value, list) else value
        if not hits:
            hits = [{"type": kind_}]
            emails.append(hits[0])
        elif kind == "replace" and not path.endswith(".value"):
            for e in hits:
                e.clear()  # §3.5.2.3: the matched values are replaced
        for e in hits:
            e.update(new)
        _ref_one_primary(emails, [h for h in hits if h.get("primary")])
    else:  # pragma: no cover - the strategy makes no other path
        raise AssertionError(path)


def _ref_one_primary(emails: list[dict[str, Any]], chosen: list[dict[str, Any]]) -> None:
    """§3.5.2: a value set primary makes any other primary value false (the last wins)."""
    keep = [v for v in chosen if v.get("primary")]
    if keep:
        for e in emails:
            if e.get("primary") and e != keep[-1]:
                e["primary"] = False


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """Empty objects and lists are unassigned (RFC 7643 §2.5)."""
    return {k: v for k, v in doc.items() if v not in ({}, [], None)}


# -- the strategy ------------------------------------------------------------------------------


def _email() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"value": EMAIL, "type": KIND}, optional={"primary": st.just(True)}
    )


OPERATION = st.one_of(
    st.builds(lambda p, v: {"op": "replace", "path": p, "value": v}, st.sampled_from(SIMPLE), TEXT),
    st.builds(lambda p: {"op": "remove", "path": p}, st.sampled_from([*SIMPLE, "active"])),
    st.builds(lambda v: {"op": "replace", "path": "active", "value": v}, st.booleans()),
    st.builds(
        lambda p, v: {"op": "add", "path": p, "value": v},
        st.sampled_from(["name.givenName", "name.familyName"]),
        TEXT,
    ),
    st.builds(
        lambda p: {"op": "remove", "path": p},
        st.sampled_from(["name.givenName", "name.familyName"]),
    ),
    # No value: replace unassigns, add does nothing (§3.5.2.1, §3.5.2.3).
    st.builds(
        lambda k, p: {"op": k, "path": p, "value": None},
        st.sampled_from(["add", "replace"]),
        st.sampled_from(SIMPLE),
    ),
    st.builds(
        lambda k: {"op": k, "path": "emails", "value": []}, st.sampled_from(["add", "replace"])
    ),
    st.builds(lambda v: {"op": "replace", "path": f"{ENT}:department", "value": v}, TEXT),
    st.just({"op": "remove", "path": f"{ENT}:department"}),
    st.builds(
        lambda v: {"op": "add", "path": "emails", "value": v},
        st.lists(_email(), min_size=1, max_size=2),
    ),
    st.builds(
        lambda v: {"op": "replace", "path": "emails", "value": v},
        st.lists(_email(), min_size=1, max_size=2),
    ),
    st.just({"op": "remove", "path": "emails"}),
    st.builds(lambda v: {"op": "remove", "path": f'emails[value eq "{v}"]'}, EMAIL),
    # Entra ID's remove of listed values (not in RFC 7644).
    st.builds(
        lambda v: {"op": "remove", "path": "emails", "value": [{"value": x} for x in v]},
        st.lists(EMAIL, min_size=1, max_size=2),
    ),
    # A filtered path without a sub-attribute: the whole matched value, as an object or
    # a list of one; replace replaces it, add merges into it; none matched: created.
    st.builds(
        lambda k, t, e, wrap: {
            "op": k,
            "path": f'emails[type eq "{t}"]',
            "value": [{**e, "type": t}] if wrap else {**e, "type": t},
        },
        st.sampled_from(["add", "replace"]),
        KIND,
        _email(),
        st.booleans(),
    ),
    st.builds(
        lambda k, v: {"op": "replace", "path": f'emails[type eq "{k}"].value', "value": v},
        KIND,
        EMAIL,
    ),
)
PATCHES = st.lists(st.lists(OPERATION, min_size=1, max_size=3), min_size=1, max_size=4)

# -- the contract's operations (what the gateway sends) -----------------------------------------

_OPS = {
    "add": common_pb2.PATCH_OP_ADD,
    "remove": common_pb2.PATCH_OP_REMOVE,
    "replace": common_pb2.PATCH_OP_REPLACE,
}


def _eq(attribute: str, value: str) -> common_pb2.Filter:
    return common_pb2.Filter(
        compare=common_pb2.Comparison(
            path=common_pb2.AttributePath(attribute=attribute),
            op=common_pb2.COMPARE_OP_EQ,
            value=common_pb2.Value(string_value=value),
        )
    )


def _proto(op: dict[str, Any]) -> common_pb2.PatchOperation:
    out = common_pb2.PatchOperation(op=_OPS[op["op"]])
    path = op["path"]
    if path.startswith("emails["):
        attribute, quoted = path[len("emails[") :].split(" eq ")
        out.path.path.attribute = "emails"
        out.path.value_filter.CopyFrom(_eq(attribute, quoted.split('"')[1]))
        if path.endswith("].value"):
            out.path.path.sub_attribute = "value"
    elif path.startswith(ENT):
        out.path.path.schema, out.path.path.attribute = ENT, "department"
    else:
        attribute, _, sub = path.partition(".")
        out.path.path.attribute, out.path.path.sub_attribute = attribute, sub
    if "value" in op:
        out.value.CopyFrom(json_format.ParseDict(op["value"], struct_pb2.Value()))
    return out


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(patches=PATCHES)
def test_patches_in_the_core_equal_the_reference(
    client: IdentityClient, tenant: Tenant, patches: list[list[dict[str, Any]]]
) -> None:
    start = User(user_name=f"u-{uuid.uuid4().hex[:12]}", title="t", active=True)
    start.emails.add(value="x@e.org", type="work")
    user = client.create_user(tenant.id, start)
    expected = user_document(user, USER_TYPE)
    for ops in patches:
        doc = copy.deepcopy(expected)
        for op in ops:
            _ref_apply(doc, op)
        expected = {k: _clean(v) if isinstance(v, dict) else v for k, v in _clean(doc).items()}
        expected = _clean(expected)
        user = client.patch_user(tenant.id, user.meta.id, [_proto(op) for op in ops])
        assert user_document(user, USER_TYPE) == expected, ops
    stored = client.get_user(tenant.id, user.meta.id)
    assert user_document(stored, USER_TYPE) == expected


def _op(kind: str, attribute: str, value: Any = None, **path: Any) -> common_pb2.PatchOperation:
    out = common_pb2.PatchOperation(op=_OPS[kind])
    out.path.path.attribute = attribute
    for key, v in path.items():
        if key == "value_filter":
            out.path.value_filter.CopyFrom(v)
        else:
            setattr(out.path.path, key, v)
    if value is not None:
        out.value.CopyFrom(json_format.ParseDict(value, struct_pb2.Value()))
    return out


def test_patch_refusals_name_the_path(client: IdentityClient, tenant: Tenant) -> None:
    """A value filter on a singular attribute, and a filtered path given more than one
    whole value, are refused (400) naming what was wrong; nothing is stored."""
    user = client.create_user(tenant.id, User(user_name=f"r-{uuid.uuid4().hex[:8]}"))
    on_name = _op("replace", "name", {"givenName": "x"}, value_filter=_eq("givenName", "a"))
    with pytest.raises(InvalidArgument) as exc:
        client.patch_user(tenant.id, user.meta.id, [on_name])
    assert "only multi-valued attributes take a value filter" in str(exc.value)
    assert "'name[" in str(exc.value)
    two = _op(
        "replace",
        "emails",
        [{"value": "a@e.org", "type": "work"}, {"value": "b@e.org", "type": "work"}],
        value_filter=_eq("type", "work"),
    )
    with pytest.raises(InvalidArgument) as exc:
        client.patch_user(tenant.id, user.meta.id, [two])
    assert "expected one value" in str(exc.value)
    assert client.get_user(tenant.id, user.meta.id).meta.version == user.meta.version


def test_remove_listed_values_of_a_multi_valued_string(
    client: IdentityClient, tenant: Tenant
) -> None:
    """A tenant's multi-valued string attribute: `remove` with a value drops exactly
    the listed values (case-sensitively, as the attribute is a plain string);
    without a value, the attribute goes."""
    urn = "urn:acme:tags"
    client.set_policy(
        tenant.id,
        TenantPolicy(
            extension_schemas=[
                ExtensionSchema(
                    schema=urn,
                    resource_type="User",
                    attributes=[SchemaAttribute(name="tags", type="string", multi_valued=True)],
                )
            ]
        ),
    )
    start = User(user_name=f"t-{uuid.uuid4().hex[:8]}")
    start.extensions.update({urn: {"tags": ["a", "b", "c", "B"]}})
    user = client.create_user(tenant.id, start)
    user = client.patch_user(
        tenant.id, user.meta.id, [_op("remove", "tags", ["b", "x"], schema=urn)]
    )
    assert json_format.MessageToDict(user.extensions)[urn]["tags"] == ["a", "c", "B"]
    user = client.patch_user(tenant.id, user.meta.id, [_op("remove", "tags", schema=urn)])
    assert "tags" not in json_format.MessageToDict(user.extensions).get(urn, {})


def test_a_filtered_whole_value_replace_replaces_and_add_merges(
    client: IdentityClient, tenant: Tenant
) -> None:
    """`emails[type eq "work"]` with a whole value: replace leaves only what the value
    says (RFC 7644 §3.5.2.3: the matched values are replaced), add merges into them."""
    start = User(user_name=f"w-{uuid.uuid4().hex[:8]}")
    start.emails.add(value="a@e.org", type="work", primary=True, display="A")
    start.emails.add(value="h@e.org", type="home")
    user = client.create_user(tenant.id, start)
    work = _eq("type", "work")
    user = client.patch_user(
        tenant.id, user.meta.id, [_op("add", "emails", {"display": "Work"}, value_filter=work)]
    )
    assert user_document(user, USER_TYPE)["emails"] == [
        {"value": "a@e.org", "type": "work", "primary": True, "display": "Work"},
        {"value": "h@e.org", "type": "home"},
    ]
    user = client.patch_user(
        tenant.id,
        user.meta.id,
        [_op("replace", "emails", {"value": "b@e.org", "type": "work"}, value_filter=work)],
    )
    assert user_document(user, USER_TYPE)["emails"] == [
        {"value": "b@e.org", "type": "work"},
        {"value": "h@e.org", "type": "home"},
    ]


def test_a_write_answers_the_user_a_read_then_gives(
    client: IdentityClient, tenant: Tenant, database_url: str
) -> None:
    """POST, PATCH and PUT answer with the user they stored (built from the write, not
    read back): it equals what a read gives afterwards, groups, roles and meta
    included, and so does the change event's copy. Also when nothing changed."""
    made = User(user_name=f"w-{uuid.uuid4().hex[:8]}", title="a")
    made.emails.add(value="w@example.org", type="work", primary=False)
    user = client.create_user(tenant.id, made)
    assert user == client.get_user(tenant.id, user.meta.id)
    group = client.create_group(tenant.id, Group(display_name=f"g-{uuid.uuid4().hex[:8]}"))
    client.update_group(tenant.id, group.meta.id, add_members=[user.meta.id])
    client.create_role(tenant.id, "viewer")
    client.assign_role(tenant.id, user.meta.id, "viewer")

    def replaced() -> User:
        current = client.get_user(tenant.id, user.meta.id)
        current.display_name = "Ada"
        return client.replace_user(tenant.id, current)

    writes = [
        lambda: client.patch_user(tenant.id, user.meta.id, [_op("replace", "title", "b")]),
        lambda: client.patch_user(tenant.id, user.meta.id, [_op("replace", "active", False)]),
        lambda: client.patch_user(tenant.id, user.meta.id, [_op("replace", "title", "b")]),
        replaced,
    ]
    for write in writes:
        answered = write()
        assert [g.id for g in answered.groups] == [group.meta.id]
        assert [r.role for r in answered.role_assignments] == ["viewer"]
        assert answered == client.get_user(tenant.id, user.meta.id)
    last = [e for e in read_events(database_url, tenant.id) if e.resource_id == user.meta.id][-1]
    assert last.user == answered
