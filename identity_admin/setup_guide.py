"""What an IdP's admin must enter, for this tenant: the values of the Set up your IdP
pages (Okta, Microsoft Entra ID) read from the tenant, its policy and the gateway's
URL, and the connection test, read from the history. The steps' wording is in the
templates (setup_*.html); what varies by tenant is decided here, once, for the pages
and the API route below alike."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scim_identity_api.v1 import history_pb2, policy_pb2, tenants_pb2
from scim_identity_client import OperationQuery
from scim_identity_client.urls import ScimUrls, scim_urls

from . import history
from .api import BOOLEAN, INTEGER, STRING, ApiCall, Route, array, obj
from .console import Console

#: The IdPs with a step-by-step page, by the path segment that names them.
IDPS = {"okta": "Okta", "entra": "Microsoft Entra ID"}


@dataclass(frozen=True)
class CustomAttribute:
    """An attribute the IdP must be told about (Okta's Profile Editor, Entra's
    attribute list) before it can send it: a role attribute, a tenant's extension."""

    schema: str
    name: str
    type: str
    #: Why the tenant needs it, for the page.
    purpose: str

    @property
    def external(self) -> str:
        """How Entra names it in a mapping's target: `urn:...:User:pantherRole`."""
        return f"{self.schema}:{self.name}"


@dataclass(frozen=True)
class Guide:
    """The tenant-specific values of the setup steps."""

    scim_url: str
    #: False: SCIM may only update users JIT sign-in created (Panther): leave
    #: "Create Users" off.
    creates: bool
    #: False: the tenant has no Groups over SCIM: do not push groups.
    groups: bool
    #: A SCIM DELETE deactivates (and keeps) the user instead of removing them.
    delete_deactivates: bool
    #: Users are matched (JIT adoption) or kept unique by their email: the IdP's
    #: username must be the email address.
    by_email: bool
    #: Group names that grant roles, e.g. "BigPanda_acme_BPRole_<role>".
    group_patterns: tuple[str, ...]
    custom_attributes: tuple[CustomAttribute, ...]
    default_role: str


def _pattern(rule: policy_pb2.GroupRoleRule) -> str:
    text = rule.pattern.replace("{role}", "<role>")
    return text.replace("{org}", rule.org or "<org>")


def guide(urls: ScimUrls, policy: policy_pb2.TenantPolicy) -> Guide:
    custom: list[CustomAttribute] = []
    role = policy.attribute_role.path
    if role.attribute:
        custom.append(
            CustomAttribute(
                schema=role.schema or "urn:ietf:params:scim:schemas:core:2.0:User",
                name=role.attribute,
                type="string",
                purpose="its value names the user's role",
            )
        )
    for ext in policy.extension_schemas:
        if ext.resource_type not in ("", "User"):
            continue
        for a in ext.attributes:
            if any(c.schema == ext.schema and c.name == a.name for c in custom):
                continue
            custom.append(
                CustomAttribute(
                    schema=ext.schema,
                    name=a.name,
                    type=a.type or "string",
                    purpose=a.description or f"an attribute of {ext.name or ext.schema}",
                )
            )
    return Guide(
        scim_url=urls.by_name,
        creates=not policy.scim_create_disabled,
        groups=not policy.groups_disabled,
        delete_deactivates=policy.on_scim_delete == policy_pb2.DELETE_ACTION_DEACTIVATE,
        by_email=policy.unique_identifier == policy_pb2.UNIQUE_IDENTIFIER_EMAIL
        or policy.unique_email,
        group_patterns=tuple(_pattern(r) for r in policy.group_role_rules),
        custom_attributes=tuple(custom),
        default_role=policy.default_role,
    )


@dataclass(frozen=True)
class Connection:
    """What the history says of the IdP's requests: the first one made with one of
    the tenant's tokens (as far as history is kept), and the latest SCIM request of
    any kind (a 401 from a wrong token included)."""

    first: history_pb2.Operation | None
    latest: history_pb2.Operation | None

    @property
    def working(self) -> bool:
        """The latest request was answered without an error."""
        return self.latest is not None and self.latest.status < 400


async def connection(console: Console, tenant: tenants_pb2.Tenant) -> Connection:
    """When the tenant's IdP first reached the connector with one of its tokens,
    and its latest SCIM request: two one-row reads of the history."""
    first, latest = await asyncio.gather(
        console.core.list_operations(
            tenant.id,
            OperationQuery(source=history_pb2.OPERATION_SOURCE_API_TOKEN, oldest_first=True),
            page_size=1,
        ),
        console.core.list_operations(
            tenant.id, OperationQuery(source=history_pb2.OPERATION_SOURCE_SCIM), page_size=1
        ),
    )
    return Connection(
        first=first.operations[0] if first.operations else None,
        latest=latest.operations[0] if latest.operations else None,
    )


@dataclass(frozen=True)
class SetUp:
    """Everything a Set up page shows."""

    guide: Guide
    connection: Connection
    tokens: list[tenants_pb2.Token]
    live_tokens: list[tenants_pb2.Token]

    @property
    def token_prefixes(self) -> dict[str, str]:
        return {k.id: k.prefix for k in self.tokens}


async def setup(console: Console, tenant: tenants_pb2.Tenant) -> SetUp:
    policy, tokens, conn = await asyncio.gather(
        console.core.get_policy(tenant.id),
        console.core.list_tokens(tenant.id, include_inactive=True),
        connection(console, tenant),
    )
    now = datetime.now(UTC)
    live = [
        k
        for k in tokens
        if not k.HasField("revoked")
        and not (k.HasField("expires") and k.expires.ToDatetime(tzinfo=UTC) <= now)
    ]
    urls = scim_urls(console.settings.scim_base_url, tenant.name, tenant.id)
    return SetUp(guide(urls, policy), conn, tokens, live)


# -- the API ---------------------------------------------------------------------------------


def setup_json(tenant: tenants_pb2.Tenant, s: SetUp) -> dict[str, Any]:
    g, prefixes = s.guide, s.token_prefixes
    first, latest = s.connection.first, s.connection.latest
    return {
        "scim_base_url": g.scim_url,
        "authentication": "bearer",
        "unique_identifier": "userName",
        "connector_active": tenant.active,
        "live_tokens": len(s.live_tokens),
        "create_users": g.creates,
        "groups": g.groups,
        "delete_deactivates": g.delete_deactivates,
        "email_is_identifier": g.by_email,
        "group_patterns": list(g.group_patterns),
        "custom_attributes": [
            {"schema": a.schema, "name": a.name, "type": a.type, "purpose": a.purpose}
            for a in g.custom_attributes
        ],
        "default_role": g.default_role,
        "connection": {
            "first_request": history.operation_json(first, prefixes) if first else None,
            "latest_request": history.operation_json(latest, prefixes) if latest else None,
            "working": s.connection.working,
        },
    }


async def get_setup(call: ApiCall) -> dict[str, Any]:
    return setup_json(call.tenant, await setup(call.console, call.tenant))


_OPERATION_OR_NULL = {"oneOf": [history.OPERATION, {"type": "null"}]}
SETUP = obj(
    {
        "scim_base_url": {
            **STRING,
            "description": "Okta's SCIM connector base URL, Entra ID's Tenant URL.",
        },
        "authentication": {
            "enum": ["bearer"],
            "description": "A token of the tenant as "
            "the bearer (Okta: HTTP Header; Entra ID: Secret Token).",
        },
        "unique_identifier": {"enum": ["userName"]},
        "connector_active": BOOLEAN,
        "live_tokens": INTEGER,
        "create_users": {
            **BOOLEAN,
            "description": "Whether the IdP may create users "
            "(else users are created by their first sign-in).",
        },
        "groups": {**BOOLEAN, "description": "Whether the IdP may push groups."},
        "delete_deactivates": BOOLEAN,
        "email_is_identifier": BOOLEAN,
        "group_patterns": array(STRING),
        "custom_attributes": array(
            obj({"schema": STRING, "name": STRING, "type": STRING, "purpose": STRING})
        ),
        "default_role": STRING,
        "connection": obj(
            {
                "first_request": {
                    **_OPERATION_OR_NULL,
                    "description": "The first request "
                    "made with one of the tenant's tokens (as far as history is kept).",
                },
                "latest_request": {
                    **_OPERATION_OR_NULL,
                    "description": "The latest SCIM request, refusals included.",
                },
                "working": {**BOOLEAN, "description": "The latest request succeeded."},
            }
        ),
    }
)

ROUTES = (
    Route(
        "GET",
        "/tenants/{tenant}/setup",
        "What an IdP's admin enters, and the connection test",
        get_setup,
        SETUP,
        tag="setup",
        description="The values the Set up your IdP pages show for this tenant, from its "
        "SCIM URL and policy, and when the IdP's first request arrived and how the "
        "latest one was answered.",
    ),
)
