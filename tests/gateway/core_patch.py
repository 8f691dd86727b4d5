"""PATCH as the gateway sends it and the core applies it, without processes: the
gateway's parse into the contract's operations, then identity_service.domain.patching on
a document. Core refusals come back as the SCIM errors the gateway would answer."""

from __future__ import annotations

from typing import Any

from identity_service.domain import patching
from identity_service.errors import DomainError
from identity_service.schema import GROUP_TYPE, USER_TYPE
from scim_gateway.errors import ScimError, classify
from scim_gateway.scim.patch import Operation, to_proto


def _core_ops(ops: list[Operation]) -> list[patching.Operation]:
    return patching.operations(to_proto(ops))


def apply_patch(rtype: Any, doc: dict[str, Any], ops: list[Operation]) -> dict[str, Any]:
    """The document after the core applies `ops` (the gateway's `rtype` names the type)."""
    core = USER_TYPE if rtype.name == "User" else GROUP_TYPE
    try:
        return patching.apply(core, doc, _core_ops(ops))
    except DomainError as err:
        status, scim_type = classify(err.code, err.reason)
        raise ScimError(status, err.message, scim_type) from None


def plan_group_patch(rtype: Any, doc: dict[str, Any], ops: list[Operation]) -> patching.GroupPlan:
    try:
        return patching.plan_group(GROUP_TYPE, doc, _core_ops(ops))
    except DomainError as err:
        status, scim_type = classify(err.code, err.reason)
        raise ScimError(status, err.message, scim_type) from None
