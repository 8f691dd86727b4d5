"""The Directory: a tenant's users and groups, searched by userName, email and
displayName through the core's ListUsers / ListGroups filters, paged; a user with
their groups and roles, and each role's provenance (which group and rule, the role
attribute or the default role; or local, an admin's), from ListAssignments with
include_grants. Read-only. The reads here serve the Directory pages (app.py) and the
API routes below alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim_identity_api.urns import CORE_USER
from scim_identity_api.v1 import common_pb2, groups_pb2, roles_pb2, tenants_pb2, users_pb2
from scim_identity_client.errors import NotFound

from .api import (
    BOOLEAN,
    INTEGER,
    STRING,
    TIME,
    ApiCall,
    Param,
    Route,
    Schema,
    array,
    obj,
    time_json,
)
from .console import NOT_FOUND, Console, PageError

#: Rows a page shows; the API's default `count`.
PAGE_SIZE = 25
#: The most the API gives in one page (the core refuses larger pages).
MAX_COUNT = 100
MAX_QUERY = 200
#: A group's members shown with it (its member_count says how many there are).
MEMBER_LIMIT = 200
SOURCES = {users_pb2.ROLE_SOURCE_SCIM: "scim", users_pb2.ROLE_SOURCE_LOCAL: "local"}
GRANT_KINDS = {
    roles_pb2.ROLE_GRANT_KIND_GROUP: "group",
    roles_pb2.ROLE_GRANT_KIND_ATTRIBUTE: "attribute",
    roles_pb2.ROLE_GRANT_KIND_DEFAULT_ROLE: "default_role",
}


def _contains(attribute: str, q: str, sub_attribute: str = "") -> common_pb2.Filter:
    return common_pb2.Filter(
        compare=common_pb2.Comparison(
            path=common_pb2.AttributePath(attribute=attribute, sub_attribute=sub_attribute),
            op=common_pb2.COMPARE_OP_CO,
            value=common_pb2.Value(string_value=q),
        )
    )


def user_filter(q: str) -> common_pb2.Filter | None:
    """userName, an email or displayName containing `q` (each compared as the
    attribute's caseExact says: these three case-insensitively, RFC 7643 §4.1)."""
    if not q:
        return None
    either = common_pb2.Filter()
    # ("or" is a Python keyword: the field is reached by name)
    getattr(either, "or").filters.extend(
        [_contains("userName", q), _contains("emails", q, "value"), _contains("displayName", q)]
    )
    return either


def group_filter(q: str) -> common_pb2.Filter | None:
    return _contains("displayName", q) if q else None


def _sort(attribute: str) -> common_pb2.Sort:
    return common_pb2.Sort(path=common_pb2.AttributePath(attribute=attribute))


def check_query(q: str) -> str:
    q = q.strip()
    if len(q) > MAX_QUERY or "\x00" in q:
        raise PageError(400, "Bad request", f"Search for at most {MAX_QUERY} characters.")
    return q


async def search_users(
    console: Console, t: tenants_pb2.Tenant, q: str, start: int, count: int = PAGE_SIZE
) -> users_pb2.ListUsersResponse:
    return await console.core.list_users(
        t.id,
        filter=user_filter(check_query(q)),
        sort=_sort("userName"),
        start_index=start,
        count=count,
    )


async def search_groups(
    console: Console, t: tenants_pb2.Tenant, q: str, start: int, count: int = PAGE_SIZE
) -> groups_pb2.ListGroupsResponse:
    return await console.core.list_groups(
        t.id,
        filter=group_filter(check_query(q)),
        sort=_sort("displayName"),
        start_index=start,
        count=count,
    )


@dataclass(frozen=True)
class UserDetail:
    user: users_pb2.User
    assignments: list[roles_pb2.Assignment]


async def user_detail(console: Console, t: tenants_pb2.Tenant, user_id: str) -> UserDetail:
    """The user and their roles with provenance; 404 for an id that names no user of
    the tenant (malformed, unknown, another tenant's)."""
    try:
        user = await console.core.get_user(t.id, user_id)
        assignments = await console.core.list_assignments(
            t.id, user_id=user.meta.id, include_grants=True
        )
    except NotFound:
        raise NOT_FOUND from None
    return UserDetail(user, assignments)


async def group_detail(console: Console, t: tenants_pb2.Tenant, group_id: str) -> groups_pb2.Group:
    """The group with its first MEMBER_LIMIT members; 404 as for a user."""
    try:
        return await console.core.get_group(t.id, group_id, member_limit=MEMBER_LIMIT)
    except NotFound:
        raise NOT_FOUND from None


# -- as JSON (the API; the pages render the same fields) -----------------------------------


def primary_email(user: users_pb2.User) -> str:
    primary = next((e for e in user.emails if e.HasField("primary") and e.primary), None)
    chosen = primary or (user.emails[0] if user.emails else None)
    return chosen.value if chosen is not None else ""


def attribute_name(path: common_pb2.AttributePath) -> str:
    """A SCIM attribute path as an admin writes it (`pantherRole`, `emails.value`,
    `urn:...:manager`)."""
    name = f"{path.attribute}.{path.sub_attribute}" if path.sub_attribute else path.attribute
    return name if path.schema in ("", CORE_USER) else f"{path.schema}:{name}"


def grant_json(g: roles_pb2.RoleGrant) -> dict[str, Any]:
    group = g.kind == roles_pb2.ROLE_GRANT_KIND_GROUP
    return {
        "kind": GRANT_KINDS.get(g.kind, "unknown"),
        "group": {"id": g.group_id, "display_name": g.group_display_name} if group else None,
        "pattern": g.pattern if group else None,
        "attribute": attribute_name(g.attribute)
        if g.kind == roles_pb2.ROLE_GRANT_KIND_ATTRIBUTE
        else None,
    }


def role_json(a: roles_pb2.Assignment) -> dict[str, Any]:
    return {
        "role": a.role,
        "source": SOURCES.get(a.source, "local"),
        "since": time_json(a.created),
        "granted_by": [grant_json(g) for g in a.grants],
    }


def user_summary(u: users_pb2.User) -> dict[str, Any]:
    return {
        "id": u.meta.id,
        "user_name": u.user_name,
        "display_name": u.display_name,
        "email": primary_email(u),
        "active": u.active if u.HasField("active") else True,
        "managed_by": u.managed_by,
    }


def user_json(d: UserDetail) -> dict[str, Any]:
    u = d.user
    return {
        **user_summary(u),
        "external_id": u.external_id,
        "name": {"given": u.name.given_name, "family": u.name.family_name},
        "emails": [
            {"value": e.value, "type": e.type, "primary": e.HasField("primary") and e.primary}
            for e in u.emails
        ],
        "created": time_json(u.meta.created),
        "last_modified": time_json(u.meta.last_modified),
        "groups": [{"id": g.id, "display_name": g.display_name} for g in u.groups],
        "roles": [role_json(a) for a in d.assignments],
    }


def group_summary(g: groups_pb2.Group) -> dict[str, Any]:
    return {
        "id": g.meta.id,
        "display_name": g.display_name,
        "external_id": g.external_id,
        "member_count": g.member_count,
    }


MEMBER_TYPES = {groups_pb2.MEMBER_TYPE_USER: "user", groups_pb2.MEMBER_TYPE_GROUP: "group"}


def group_json(g: groups_pb2.Group) -> dict[str, Any]:
    return {
        **group_summary(g),
        "created": time_json(g.meta.created),
        "last_modified": time_json(g.meta.last_modified),
        "members": [
            {"id": m.value, "type": MEMBER_TYPES.get(m.type, "user"), "display": m.display}
            for m in g.members
        ],
    }


# -- the API ---------------------------------------------------------------------------------

GRANT = obj(
    {
        "kind": {
            "enum": list(GRANT_KINDS.values()),
            "description": "group: a group-name rule matched one of the user's groups; "
            "attribute: the role attribute names it; default_role: no rule gave a role.",
        },
        "group": {"oneOf": [obj({"id": STRING, "display_name": STRING}), {"type": "null"}]},
        "pattern": {"type": ["string", "null"], "description": "The group rule's pattern."},
        "attribute": {"type": ["string", "null"], "description": "The role attribute."},
    }
)
ROLE = obj(
    {
        "role": STRING,
        "source": {
            "enum": list(SOURCES.values()),
            "description": "scim: the tenant's rules give it from IdP data; local: an admin.",
        },
        "since": TIME,
        "granted_by": array(GRANT),
    }
)
USER_SUMMARY_PROPS = {
    "id": STRING,
    "user_name": STRING,
    "display_name": STRING,
    "email": {"type": "string", "description": "The primary email, else the first; or ''."},
    "active": BOOLEAN,
    "managed_by": {"type": "string", "description": "scim, jit or local."},
}
USER_SUMMARY = obj(USER_SUMMARY_PROPS)
USER = obj(
    {
        **USER_SUMMARY_PROPS,
        "external_id": STRING,
        "name": obj({"given": STRING, "family": STRING}),
        "emails": array(obj({"value": STRING, "type": STRING, "primary": BOOLEAN})),
        "created": TIME,
        "last_modified": TIME,
        "groups": array(obj({"id": STRING, "display_name": STRING})),
        "roles": array(ROLE),
    }
)
GROUP_SUMMARY_PROPS = {
    "id": STRING,
    "display_name": STRING,
    "external_id": STRING,
    "member_count": INTEGER,
}
GROUP_SUMMARY = obj(GROUP_SUMMARY_PROPS)
GROUP = obj(
    {
        **GROUP_SUMMARY_PROPS,
        "created": TIME,
        "last_modified": TIME,
        "members": {
            **array(obj({"id": STRING, "type": {"enum": ["user", "group"]}, "display": STRING})),
            "description": f"The first {MEMBER_LIMIT} members (member_count says how many).",
        },
    }
)


def page_of(items: Schema) -> Schema:
    return obj({"total_results": INTEGER, "start_index": INTEGER, "items": array(items)})


SEARCH = (
    Param("q", {"type": "string", "maxLength": MAX_QUERY}, "Text the names or emails contain."),
    Param(
        "start_index",
        {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "1-based index of the first result.",
    ),
    Param(
        "count",
        {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        f"Results per page (default {PAGE_SIZE}).",
    ),
)


def _paging(call: ApiCall) -> tuple[str, int, int]:
    return (
        call.query.get("q", ""),
        call.query.get("start_index", 1),
        call.query.get("count", PAGE_SIZE),
    )


async def list_users(call: ApiCall) -> dict[str, Any]:
    found = await search_users(call.console, call.tenant, *_paging(call))
    return {
        "total_results": found.total_results,
        "start_index": found.start_index or 1,
        "items": [user_summary(u) for u in found.users],
    }


async def get_user(call: ApiCall) -> dict[str, Any]:
    return user_json(await user_detail(call.console, call.tenant, call.params["user_id"]))


async def list_groups(call: ApiCall) -> dict[str, Any]:
    found = await search_groups(call.console, call.tenant, *_paging(call))
    return {
        "total_results": found.total_results,
        "start_index": found.start_index or 1,
        "items": [group_summary(g) for g in found.groups],
    }


async def get_group(call: ApiCall) -> dict[str, Any]:
    return group_json(await group_detail(call.console, call.tenant, call.params["group_id"]))


ROUTES = (
    Route(
        "GET",
        "/tenants/{tenant}/users",
        "Search users",
        list_users,
        page_of(USER_SUMMARY),
        query=SEARCH,
        tag="directory",
        description="Users whose userName, an email or displayName contains `q` "
        "(case-insensitively), by userName.",
    ),
    Route(
        "GET",
        "/tenants/{tenant}/users/{user_id}",
        "A user, their groups, and their roles with provenance",
        get_user,
        USER,
        path_params={"user_id": "The user's id."},
        tag="directory",
        description="Each role says where it comes from: `source` scim (the tenant's "
        "rules, from IdP data) with `granted_by` naming each group and rule, the role "
        "attribute or the default role; or local (an admin assigned it).",
    ),
    Route(
        "GET",
        "/tenants/{tenant}/groups",
        "Search groups",
        list_groups,
        page_of(GROUP_SUMMARY),
        query=SEARCH,
        tag="directory",
        description="Groups whose displayName contains `q`, by displayName.",
    ),
    Route(
        "GET",
        "/tenants/{tenant}/groups/{group_id}",
        "A group and its members",
        get_group,
        GROUP,
        path_params={"group_id": "The group's id."},
        tag="directory",
    ),
)
