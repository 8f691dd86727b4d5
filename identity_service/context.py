"""Who asked and which request: read from call metadata at the RPC boundary."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from identity.v1 import changes_pb2


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str = ""
    actor_kind: str = "system"
    actor_id: str = ""

    def actor(self) -> changes_pb2.Actor:
        return changes_pb2.Actor(kind=self.actor_kind, id=self.actor_id)

    @classmethod
    def from_metadata(cls, metadata: Iterable[tuple[str, str | bytes]] | None) -> RequestContext:
        request_id, kind, ident = "", "system", ""
        for key, value in metadata or ():
            v = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if key == "x-request-id":
                request_id = v[:64]
            elif key == "identity-actor":
                k, _, i = v.partition(":")
                if k in {"token", "admin", "system"}:
                    kind, ident = k, i[:128]
        return cls(request_id=request_id, actor_kind=kind, actor_id=ident)


SYSTEM = RequestContext()
