"""Roles, the policy's rules and the mappings: the actions the Roles and rules and
the Mappings pages take (checks, the core calls, the history record), and the API
routes over the same actions, so the two cannot answer differently.

Whether a policy can work is the core's to say (PreviewPolicy, SetPolicy): a refusal
is a 400 (page) or 422 (API) with the core's reason, and nothing changes. A policy is
saved only as previewed: SetPolicy gets the preview's digest and refuses (ABORTED)
if saving now would do anything else; a change built from a policy read earlier is
also checked against the preview's `current`, so no one saves over another admin's
change unseen. Either refusal is `Stale` (409)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from scim_identity_api.v1 import history_pb2, policy_pb2, roles_pb2
from scim_identity_client.errors import AlreadyExists, InvalidArgument, NotFound, VersionMismatch

from . import policy_form as pf
from .api import (
    BOOLEAN,
    INTEGER,
    STRING,
    TIME,
    ApiCall,
    ApiError,
    Reply,
    Route,
    array,
    obj,
    time_json,
)
from .connector import Refused, refusals_as_422
from .console import NOT_FOUND, Action, Console

H = history_pb2
P = policy_pb2
#: Most effects a preview lists (the digest covers them all; the count says how many).
PREVIEW_EFFECTS = 1000
STALE = (
    "This tenant's policy, users or groups changed since the preview (or since the "
    "policy was read), so saving would not do what was shown. Nothing was saved: "
    "preview it again."
)


class Stale(Refused):
    """Saving would not do what was previewed (409): nothing was saved."""

    def __init__(self, message: str = STALE) -> None:
        super().__init__(409, message)


# -- the actions ------------------------------------------------------------------------


async def define_role(act: Action, name: str, description: str) -> roles_pb2.Role:
    """Defines a role. Refused (400) for a name the core refuses, (409) when taken."""
    name = name.strip()
    try:
        role = await act.console.core.create_role(
            act.tenant.id, name, description=description.strip(), ctx=act.ctx
        )
    except (InvalidArgument, AlreadyExists) as err:
        status = 409 if isinstance(err, AlreadyExists) else 400
        await act.record(H.OPERATION_KIND_CREATE, "Role", name[:64], status, err.message)
        raise Refused(status, err.message) from None
    await act.record(H.OPERATION_KIND_CREATE, "Role", name[:64], 201, f"role {name} created")
    return role


async def role_named(console: Console, tenant_id: str, name: str) -> roles_pb2.Role:
    """One of the tenant's roles; 404 when it has none of that name."""
    found = next((r for r in await console.core.list_roles(tenant_id) if r.name == name), None)
    if found is None:
        raise NOT_FOUND
    return found


async def remove_role(act: Action, role: roles_pb2.Role) -> None:
    """Deletes the role: every assignment of it goes (SCIM-managed and local)."""
    try:
        await act.console.core.delete_role(act.tenant.id, role.name, ctx=act.ctx)
    except NotFound:
        raise NOT_FOUND from None  # deleted meanwhile
    await act.record(
        H.OPERATION_KIND_DELETE, "Role", role.name[:64], 200, f"role {role.name} deleted"
    )


async def preview(
    console: Console, tenant_id: str, new: policy_pb2.TenantPolicy, *, max_effects: int = 0
) -> policy_pb2.PolicyPreview:
    """What saving `new` would do now, from the core. Refused (400) with the core's
    reason for a policy that cannot work. Writes nothing: not an admin action."""
    try:
        return await console.core.preview_policy(
            tenant_id, new, max_effects=max_effects or PREVIEW_EFFECTS
        )
    except InvalidArgument as err:
        raise Refused(400, err.message) from None


async def save(
    act: Action, current: policy_pb2.TenantPolicy, new: policy_pb2.TenantPolicy, digest: str
) -> None:
    """Saves `new` (read from `current`) exactly as the preview of digest `digest`."""
    try:
        await act.console.core.set_policy(act.tenant.id, new, expected_digest=digest, ctx=act.ctx)
    except InvalidArgument as err:
        await act.record(H.OPERATION_KIND_UPDATE, "Policy", act.tenant.id, 400, err.message)
        raise Refused(400, err.message) from None
    except VersionMismatch:
        await act.record(
            H.OPERATION_KIND_UPDATE, "Policy", act.tenant.id, 409, "not saved: stale preview"
        )
        raise Stale from None
    changed = pf.changed_parts(current, new)
    await act.record(
        H.OPERATION_KIND_UPDATE, "Policy", act.tenant.id, 200, f"policy saved: {changed}"
    )


async def change(
    act: Action, current: policy_pb2.TenantPolicy, new: policy_pb2.TenantPolicy, done: str
) -> None:
    """A change built from `current` (a mapping added, changed, removed), previewed
    and saved as previewed; `done` is the history's line for it."""
    try:
        previewed = await preview(act.console, act.tenant.id, new)
    except Refused as err:
        await act.record(H.OPERATION_KIND_UPDATE, "Policy", act.tenant.id, 400, err.message)
        raise
    if previewed.current != current:
        await act.record(
            H.OPERATION_KIND_UPDATE, "Policy", act.tenant.id, 409, f"not saved: {done}"
        )
        raise Stale
    try:
        await act.console.core.set_policy(
            act.tenant.id, new, expected_digest=previewed.digest, ctx=act.ctx
        )
    except VersionMismatch:
        await act.record(
            H.OPERATION_KIND_UPDATE, "Policy", act.tenant.id, 409, f"not saved: {done}"
        )
        raise Stale from None
    await act.record(H.OPERATION_KIND_UPDATE, "Policy", act.tenant.id, 200, done)


def mapping_named(
    current: policy_pb2.TenantPolicy, kind: str, field: str
) -> policy_pb2.AttributeMapping:
    """The mapping of `field` among the `kind` ("user", "group") mappings; 404 when
    there is none (removed meanwhile, or never)."""
    found = next((m for m in pf.mappings_of(current, kind) or [] if m.field == field), None)
    if found is None:
        raise NOT_FOUND
    return found


# -- the API ----------------------------------------------------------------------------


def _enum(kind: Any, description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"enum": list(kind.keys())}
    if description:
        out["description"] = description
    return out


PATH = obj(
    {
        "schema": {"type": "string", "description": "A schema URN; empty: the core schema."},
        "attribute": STRING,
        "sub_attribute": STRING,
    },
    optional=("schema", "attribute", "sub_attribute"),
)
MAPPING = obj(
    {
        "field": {"type": "string", "description": "Your entity's field, e.g. employeeId."},
        "source": PATH,
        "kind": _enum(
            P.MappingKind,
            "Big ACL's types: a simple value, a reference (a user or group id), a list of "
            "references (e.g. members).",
        ),
        "primary_only": {
            "type": "boolean",
            "description": "Multi-valued sources: the primary value (else the first).",
        },
    },
    optional=("source", "kind", "primary_only"),
)
_ATTRIBUTE = obj(
    {
        "name": STRING,
        "type": {
            "enum": sorted(["string", "boolean", "integer", "decimal", "dateTime", "reference"])
        },
        "multi_valued": BOOLEAN,
        "required": BOOLEAN,
        "case_exact": BOOLEAN,
        "description": STRING,
    },
    optional=("type", "multi_valued", "required", "case_exact", "description"),
)
POLICY = obj(
    {
        "group_role_rules": array(
            obj(
                {
                    "pattern": {
                        "type": "string",
                        "description": "With {role} and optionally {org}, e.g. "
                        "BigPanda_{org}_BPRole_{role}.",
                    },
                    "org": STRING,
                    "underscores_are_spaces": BOOLEAN,
                },
                optional=("pattern", "org", "underscores_are_spaces"),
            )
        ),
        "attribute_role": obj({"path": PATH}, optional=("path",)),
        "on_last_scim_role_removed": _enum(P.LastRoleAction),
        "on_scim_delete": _enum(P.DeleteAction),
        "unique_identifier": _enum(P.UniqueIdentifier),
        "scim_create_disabled": BOOLEAN,
        "local_edits": _enum(P.LocalEdits),
        "extension_schemas": array(
            obj(
                {
                    "schema": STRING,
                    "name": STRING,
                    "description": STRING,
                    "resource_type": {"enum": ["User", "Group"]},
                    "attributes": array(_ATTRIBUTE),
                },
                optional=("schema", "name", "description", "resource_type", "attributes"),
            )
        ),
        "user_mappings": array(MAPPING),
        "group_mappings": array(MAPPING),
        "unknown_members": _enum(P.UnknownMembers),
        "default_role": STRING,
        "groups_disabled": BOOLEAN,
        "unique_email": BOOLEAN,
    },
    optional=[f.name for f in P.TenantPolicy.DESCRIPTOR.fields],
)
ROLE = obj({"name": STRING, "description": STRING, "created": TIME})
EFFECT = obj(
    {
        "user_id": STRING,
        "user_name": STRING,
        "roles_gained": array(STRING),
        "roles_lost": array(STRING),
        "deactivated": {"type": "boolean", "description": "Lost their last SCIM-managed role."},
        "deleted": {"type": "boolean", "description": "Lost their last SCIM-managed role."},
    }
)
PREVIEW = obj(
    {
        "effects": array(EFFECT),
        "effect_count": {"type": "integer", "description": "Users who would change, all told."},
        "digest": {"type": "string", "description": "Send it to PUT .../policy to save this."},
        "revision": INTEGER,
        "current": POLICY,
    }
)
MAPPINGS = obj({"users": array(MAPPING), "groups": array(MAPPING)})


def _json(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return out


def _parse(body: Any, message: Any) -> Any:
    """A checked JSON body into `message` (the schema already fits the proto's JSON)."""
    try:
        return json_format.ParseDict(body, message)
    except json_format.ParseError as err:
        raise ApiError(422, str(err)) from None


def role_json(r: roles_pb2.Role) -> dict[str, Any]:
    return {"name": r.name, "description": r.description, "created": time_json(r.created)}


async def list_roles(call: ApiCall) -> list[dict[str, Any]]:
    return [role_json(r) for r in await call.console.core.list_roles(call.tenant.id)]


@refusals_as_422
async def create_role(call: ApiCall) -> dict[str, Any]:
    role = await define_role(call.action(), call.body["name"], call.body.get("description", ""))
    return role_json(role)


async def delete_role(call: ApiCall) -> Reply:
    role = await role_named(call.console, call.tenant.id, call.params["role"])
    await remove_role(call.action(), role)
    return Reply(None, 204)


async def get_policy(call: ApiCall) -> dict[str, Any]:
    return _json(await call.console.core.get_policy(call.tenant.id))


@refusals_as_422
async def preview_policy(call: ApiCall) -> dict[str, Any]:
    new = _parse(call.body["policy"], P.TenantPolicy())
    answer = await preview(
        call.console, call.tenant.id, new, max_effects=call.body.get("max_effects", 0)
    )
    out = _json(answer)
    out["effect_count"] = answer.effect_count  # an int32: a number, not a string
    out["revision"] = answer.revision
    return out


@refusals_as_422
async def set_policy(call: ApiCall) -> dict[str, Any]:
    new = _parse(call.body["policy"], P.TenantPolicy())
    current = await call.console.core.get_policy(call.tenant.id)
    await save(call.action(), current, new, call.body["digest"])
    return _json(new)


async def list_mappings(call: ApiCall) -> dict[str, Any]:
    policy = await call.console.core.get_policy(call.tenant.id)
    return {
        "users": [_json(m) for m in policy.user_mappings],
        "groups": [_json(m) for m in policy.group_mappings],
    }


def _mapping_routes(kind: str) -> tuple[Route, ...]:
    """Add, change and remove one of the `kind` ("user", "group") mappings."""
    plural = f"{kind}s"

    @refusals_as_422
    async def add(call: ApiCall) -> dict[str, Any]:
        mapping = _parse(call.body, P.AttributeMapping())
        current = await call.console.core.get_policy(call.tenant.id)
        new = pf.with_mapping(current, kind, mapping)
        await change(call.action(), current, new, f"{kind} mapping {mapping.field} added")
        return _json(mapping)

    @refusals_as_422
    async def replace(call: ApiCall) -> dict[str, Any]:
        mapping = _parse(call.body, P.AttributeMapping())
        current = await call.console.core.get_policy(call.tenant.id)
        was = mapping_named(current, kind, call.params["mapping"])
        new = pf.with_mapping(current, kind, mapping, replacing=was.field)
        await change(call.action(), current, new, f"{kind} mapping {was.field} changed")
        return _json(mapping)

    @refusals_as_422
    async def remove(call: ApiCall) -> Reply:
        current = await call.console.core.get_policy(call.tenant.id)
        was = mapping_named(current, kind, call.params["mapping"])
        new = pf.with_mapping(current, kind, None, replacing=was.field)
        await change(call.action(), current, new, f"{kind} mapping {was.field} removed")
        return Reply(None, 204)

    # (each kind's handlers have their own names: a name is an operationId)
    add.__name__ = f"add_{kind}_mapping"
    replace.__name__ = f"change_{kind}_mapping"
    remove.__name__ = f"remove_{kind}_mapping"
    refused = {
        409: "The policy changed meanwhile (nothing saved); read it and try again.",
        422: "A mapping the core refuses (its reason), or a value of the wrong type.",
    }
    field = {"mapping": f"The mapped field's name (a {kind} mapping's `field`)."}
    return (
        Route(
            "POST",
            f"/tenants/{{tenant}}/mappings/{plural}",
            f"Add a {kind} mapping",
            add,
            MAPPING,
            status=201,
            body=MAPPING,
            errors=refused,
            tag="mappings",
        ),
        Route(
            "PUT",
            f"/tenants/{{tenant}}/mappings/{plural}/{{mapping}}",
            f"Change a {kind} mapping",
            replace,
            MAPPING,
            body=MAPPING,
            path_params=field,
            errors=refused,
            tag="mappings",
        ),
        Route(
            "DELETE",
            f"/tenants/{{tenant}}/mappings/{plural}/{{mapping}}",
            f"Remove a {kind} mapping",
            remove,
            None,
            status=204,
            path_params=field,
            errors={409: refused[409]},
            tag="mappings",
        ),
    )


ROUTES = (
    Route(
        "GET", "/tenants/{tenant}/roles", "The tenant's roles", list_roles, array(ROLE), tag="roles"
    ),
    Route(
        "POST",
        "/tenants/{tenant}/roles",
        "Define a role",
        create_role,
        ROLE,
        status=201,
        body=obj({"name": STRING, "description": STRING}, optional=("description",)),
        errors={409: "The tenant has a role of that name."},
        tag="roles",
    ),
    Route(
        "DELETE",
        "/tenants/{tenant}/roles/{role}",
        "Delete a role",
        delete_role,
        None,
        status=204,
        path_params={"role": "The role's name."},
        tag="roles",
        description="Every assignment of it goes, SCIM-managed and local.",
    ),
    Route(
        "GET", "/tenants/{tenant}/policy", "The tenant's policy", get_policy, POLICY, tag="policy"
    ),
    Route(
        "POST",
        "/tenants/{tenant}/policy/preview",
        "What saving a policy would do",
        preview_policy,
        PREVIEW,
        body=obj(
            {
                "policy": POLICY,
                "max_effects": {"type": "integer", "minimum": 1, "maximum": 10000},
            },
            optional=("max_effects",),
        ),
        errors={422: "A policy the core refuses (its reason), or a value of the wrong type."},
        tag="policy",
        description="Computed by the core with the code that saves a policy, then rolled "
        "back: each user's roles gained and lost, deactivations, deletions. Writes nothing.",
    ),
    Route(
        "PUT",
        "/tenants/{tenant}/policy",
        "Save a policy, exactly as previewed",
        set_policy,
        POLICY,
        body=obj({"policy": POLICY, "digest": {"type": "string", "minLength": 1}}),
        errors={
            409: "Saving would no longer do what the preview showed: nothing saved.",
            422: "A policy the core refuses (its reason), or a value of the wrong type.",
        },
        tag="policy",
        description="`digest` is the preview's: the policy is saved only if it does exactly "
        "what that preview showed.",
    ),
    Route(
        "GET",
        "/tenants/{tenant}/mappings",
        "The user and group mappings",
        list_mappings,
        MAPPINGS,
        tag="mappings",
    ),
    *_mapping_routes("user"),
    *_mapping_routes("group"),
)
