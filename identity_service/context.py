"""Who asked and which request: read from call metadata at the RPC boundary."""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field

from scim_identity_api.metadata import (
    ACTOR_KEY,
    BEARER_KEY,
    COMMIT_DEADLINE_KEY,
    INTENT_KEY,
    REQUEST_ID_KEY,
    TENANT_KEY,
    WRITE_INTENT,
)
from scim_identity_api.v1 import changes_pb2


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str = ""
    actor_kind: str = "system"
    actor_id: str = ""
    #: A tenant's API token (the SCIM bearer secret) the caller passes on, so the
    #: call authenticates it in its own transaction (see edge.auth.Caller).
    bearer: str = field(default="", repr=False)
    #: The tenant the bearer must belong to (name or id), when the caller knows one.
    tenant_ref: str = ""
    #: time.monotonic() after which the call commits nothing (COMMIT_DEADLINE_KEY).
    commit_by: float | None = None
    #: The call is made for a request that writes (bearer.proto, `identity-intent`).
    write_intent: bool = False

    def actor(self) -> changes_pb2.Actor:
        return changes_pb2.Actor(kind=self.actor_kind, id=self.actor_id)

    @classmethod
    def from_metadata(cls, metadata: Iterable[tuple[str, str | bytes]] | None) -> RequestContext:
        request_id, kind, ident, bearer, tenant_ref = "", "system", "", "", ""
        commit_by: float | None = None
        write_intent = False
        for key, value in metadata or ():
            v = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if key == REQUEST_ID_KEY:
                request_id = v[:64]
            elif key == ACTOR_KEY:
                k, _, i = v.partition(":")
                if k in {"token", "admin", "system"}:
                    kind, ident = k, i[:128]
            elif key == BEARER_KEY:
                bearer = v
            elif key == TENANT_KEY:
                tenant_ref = v[:128]
            elif key == COMMIT_DEADLINE_KEY and v.isdigit() and len(v) < 12:
                commit_by = time.monotonic() + int(v) / 1000
            elif key == INTENT_KEY:
                write_intent = v == WRITE_INTENT
        return cls(
            request_id=request_id,
            actor_kind=kind,
            actor_id=ident,
            bearer=bearer,
            tenant_ref=tenant_ref,
            commit_by=commit_by,
            write_intent=write_intent,
        )


SYSTEM = RequestContext()


@dataclass(slots=True)
class CallRecord:
    """One unary call as its access line tells it: its method, its context, parsed
    once from the metadata, and the tenant and token it authenticated (once known)."""

    method: str
    ctx: RequestContext
    tenant: str = ""
    token: str = ""


#: The unary call the current task answers (set around the servicer by
#: interceptors.ErrorInterceptor; None outside one, e.g. servicers called directly).
CURRENT_CALL: ContextVar[CallRecord | None] = ContextVar("identity_call", default=None)
