"""Any sequence of PATCHes applied by the core (PatchUser, both databases) leaves the
user the same as the same sequence applied to its JSON document by a small
reference implementation of RFC 7644 §3.5.2 written here, independently of
identity_service.patching."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from google.protobuf import json_format, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity_service.domain.patching import user_document
from identity_service.schema import USER_TYPE
from scim_identity_api.v1 import common_pb2
from scim_identity_client import IdentityClient
from scim_identity_client.types import Tenant, User

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SIMPLE = ("title", "nickName", "displayName", "locale")
TEXT = st.sampled_from(["a", "B", "c c", "Dé"])
EMAIL = st.sampled_from(["x@e.org", "Y@e.org", "z@e.org"])
KIND = st.sampled_from(["work", "home"])

# -- the reference: RFC 7644 §3.5.2 on a plain JSON document ------------------------------


def _ref_apply(doc: dict[str, Any], op: dict[str, Any]) -> None:
    kind, path, value = op["op"], op["path"], copy.deepcopy(op.get("value"))
    if path in SIMPLE or path == "active":
        if kind == "remove":
            doc.pop(path, None)
        else:
            doc[path] = value
    elif path == "name.givenName":
        name = doc.setdefault("name", {})
        if kind == "remove":
            name.pop("givenName", None)
        else:
            name["givenName"] = value
    elif path == f"{ENT}:department":
        ent = doc.setdefault(ENT, {})
        if kind == "remove":
            ent.pop("department", None)
        else:
            ent["department"] = value
    elif path == "emails":
        if kind == "remove":
            doc.pop("emails", None)
        elif kind == "add":  # §3.5.2.1: added to the set, no duplicates
            emails = doc.setdefault("emails", [])
            emails += [v for v in value if v not in emails]
        else:  # §3.5.2.3: the set replaced
            doc["emails"] = list(value)
    elif path.startswith("emails[value eq "):  # remove the matching values
        target = path.split('"')[1].lower()
        doc["emails"] = [e for e in doc.get("emails", []) if e["value"].lower() != target]
    elif path.startswith("emails[type eq "):  # ....value: set on matches, else create
        kind_ = path.split('"')[1]
        hits = [e for e in doc.get("emails", []) if e.get("type", "").lower() == kind_]
        if not hits:
            doc.setdefault("emails", []).append({"type": kind_, "value": value})
        for e in hits:
            e["value"] = value
    else:  # pragma: no cover - the strategy makes no other path
        raise AssertionError(path)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """Empty objects and lists are unassigned (RFC 7643 §2.5)."""
    return {k: v for k, v in doc.items() if v not in ({}, [], None)}


# -- the strategy ------------------------------------------------------------------------------


def _email() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({"value": EMAIL, "type": KIND})


OPERATION = st.one_of(
    st.builds(lambda p, v: {"op": "replace", "path": p, "value": v}, st.sampled_from(SIMPLE), TEXT),
    st.builds(lambda p: {"op": "remove", "path": p}, st.sampled_from([*SIMPLE, "active"])),
    st.builds(lambda v: {"op": "replace", "path": "active", "value": v}, st.booleans()),
    st.builds(lambda v: {"op": "add", "path": "name.givenName", "value": v}, TEXT),
    st.just({"op": "remove", "path": "name.givenName"}),
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
