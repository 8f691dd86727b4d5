"""The operations history: what the gateway did, for whom, and how it ended."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf import timestamp_pb2
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from scim_identity_api.v1 import history_pb2

from ..errors import DomainError, InvalidValue, NotFound, TooMany
from ..storage.models import OperationRow, TenantRow, table, utcnow
from ..storage.prepared import PreparedInsert
from .convert import new_id, ts
from .rows import chunks
from .validate import check_message

log = logging.getLogger("identity_service.history")
#: Most records one RecordOperations call may carry.
MAX_BATCH = 5000


def _proto(row: OperationRow, tenant_id: str) -> history_pb2.Operation:
    return history_pb2.Operation(
        id=row.id,
        tenant_id=tenant_id,
        time=ts(row.time),
        token_id=row.token_id,
        method=row.method,
        # (the ignore below) an int where the stubs want the enum's ValueType (a NewType)
        kind=row.kind,  # type: ignore[arg-type]
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        status=row.status,
        scim_type=row.scim_type,
        detail=row.detail,
        duration_ms=row.duration_ms,
        request_id=row.request_id,
        actor=row.actor,
    )


_FIELDS = history_pb2.Operation.DESCRIPTOR.fields
#: The record's text fields; besides them it holds only numbers and its Timestamp.
_TEXT = tuple(f.name for f in _FIELDS if f.type == f.TYPE_STRING and not f.is_repeated)
_ONLY_TEXT_AND_TIME = all(
    f.name in _TEXT
    or (
        f.type != f.TYPE_STRING
        and (f.type != f.TYPE_MESSAGE or f.message_type is timestamp_pb2.Timestamp.DESCRIPTOR)
    )
    for f in _FIELDS
)


_KINDS = frozenset(history_pb2.OperationKind.values())
#: What a Timestamp (and a datetime) can hold: 0001-01-01 to 9999-12-31 23:59:59.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def _checked(op: history_pb2.Operation) -> None:
    """Refuses what no row can hold (so a batch drops it instead of failing whole)."""
    # The generic walk costs more than the insert; one search over the joined text
    # fields answers the same for a record (which field, when one holds a NUL).
    if not _ONLY_TEXT_AND_TIME or "\x00" in "".join([getattr(op, f) for f in _TEXT]):
        check_message(op)
    if not 100 <= op.status <= 599:
        raise InvalidValue("status must be an HTTP status code", field="status")
    if op.kind not in _KINDS:
        raise InvalidValue(f"kind {op.kind} is not an OperationKind", field="kind")
    if not math.isfinite(op.duration_ms):
        raise InvalidValue("duration_ms must be a finite number", field="duration_ms")
    if op.HasField("time") and not (
        _MIN_SECONDS <= op.time.seconds <= _MAX_SECONDS and 0 <= op.time.nanos < 1_000_000_000
    ):
        raise InvalidValue("time must be within the years 1 to 9999", field="time")


_COLUMNS = (
    "id",
    "tenant_pk",
    "time",
    "token_id",
    "method",
    "kind",
    "resource_type",
    "resource_id",
    "status",
    "scim_type",
    "detail",
    "duration_ms",
    "request_id",
    "actor",
)
_INSERT = PreparedInsert(table(OperationRow), _COLUMNS)


def _row(op: history_pb2.Operation, tenant_pk: int) -> tuple[Any, ...]:
    """The row of a valid record, a value per column in _COLUMNS order."""
    return (
        new_id(),
        tenant_pk,
        op.time.ToDatetime(tzinfo=UTC) if op.HasField("time") else utcnow(),
        op.token_id[:36],
        op.method[:16].upper(),
        op.kind,
        op.resource_type[:32],
        op.resource_id[:64],
        op.status,
        op.scim_type[:32],
        op.detail[:2000],
        max(op.duration_ms, 0.0),
        op.request_id[:64],
        op.actor[:256],
    )


def record(session: Session, tenant: TenantRow, op: history_pb2.Operation) -> history_pb2.Operation:
    _checked(op)
    row = OperationRow(**dict(zip(_COLUMNS, _row(op, tenant.pk), strict=True)))
    session.add(row)
    session.flush()
    return _proto(row, tenant.id)


def record_many(
    session: Session, ops: Sequence[history_pb2.Operation]
) -> history_pb2.RecordOperationsResponse:
    """Writes a batch of records (any tenants) with one INSERT per chunk. Records
    that are invalid or name a tenant that does not exist are dropped and counted:
    one bad record must not cost the other tenants theirs."""
    if len(ops) > MAX_BATCH:
        raise TooMany(f"at most {MAX_BATCH} records per call", field="operations")
    valid = []
    for op in ops:
        try:
            _checked(op)
        except DomainError as err:
            log.warning("dropped a history record of tenant %s: %s", op.tenant_id, err.message)
            continue
        valid.append(op)
    ops_in = len(ops)
    ops = valid
    wanted = {op.tenant_id.lower() for op in ops}
    known: dict[str, int] = {}
    for part in chunks(sorted(wanted)):
        found = session.execute(select(TenantRow.id, TenantRow.pk).where(TenantRow.id.in_(part)))
        known.update({r.id: r.pk for r in found})
    rows = [_row(op, known[op.tenant_id.lower()]) for op in ops if op.tenant_id.lower() in known]
    _INSERT.run(session, rows)
    return history_pb2.RecordOperationsResponse(recorded=len(rows), dropped=ops_in - len(rows))


def get_operation(session: Session, tenant: TenantRow, operation_id: str) -> history_pb2.Operation:
    row = session.execute(
        select(OperationRow).where(
            OperationRow.tenant_pk == tenant.pk, OperationRow.id == operation_id[:36]
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("no such operation", field="operation_id")
    return _proto(row, tenant.id)


_SOURCES = frozenset(history_pb2.OperationSource.values())
_OUTCOMES = frozenset(history_pb2.OutcomeFilter.values())


def _bound(
    req: history_pb2.ListOperationsRequest, name: Literal["since", "until"]
) -> datetime | None:
    if not req.HasField(name):
        return None
    t: timestamp_pb2.Timestamp = getattr(req, name)
    if not (_MIN_SECONDS <= t.seconds <= _MAX_SECONDS and 0 <= t.nanos < 1_000_000_000):
        raise InvalidValue(f"{name} must be within the years 1 to 9999", field=name)
    return t.ToDatetime(tzinfo=UTC)


def list_operations(
    session: Session, tenant: TenantRow, req: history_pb2.ListOperationsRequest
) -> history_pb2.ListOperationsResponse:
    size = min(max(req.page_size or 100, 1), 1000)
    if req.status and not 100 <= req.status <= 599:
        raise InvalidValue("status must be an HTTP status code (or 0: any)", field="status")
    if req.source not in _SOURCES:
        raise InvalidValue(f"source {req.source} is not an OperationSource", field="source")
    if req.outcome not in _OUTCOMES:
        raise InvalidValue(f"outcome {req.outcome} is not an OutcomeFilter", field="outcome")
    since, until = _bound(req, "since"), _bound(req, "until")
    if req.oldest_first:
        order = (OperationRow.time.asc(), OperationRow.pk.asc())
    else:
        order = (OperationRow.time.desc(), OperationRow.pk.desc())
    stmt = (
        select(OperationRow)
        .where(OperationRow.tenant_pk == tenant.pk)
        .order_by(*order)
        .limit(size + 1)
    )
    if req.kinds:
        stmt = stmt.where(OperationRow.kind.in_(list(req.kinds)))
    if req.resource_type:
        stmt = stmt.where(OperationRow.resource_type == req.resource_type)
    if req.outcome == history_pb2.OUTCOME_FILTER_SUCCESS:
        stmt = stmt.where(OperationRow.status < 400)
    elif req.outcome == history_pb2.OUTCOME_FILTER_ERROR:
        stmt = stmt.where(OperationRow.status >= 400)
    if req.status:
        stmt = stmt.where(OperationRow.status == req.status)
    if req.request_id:
        # Stored cut to 64 characters (_row): a longer id matches its stored form.
        # On the (tenant_pk, request_id) index (0007).
        stmt = stmt.where(OperationRow.request_id == req.request_id[:64])
    if req.source == history_pb2.OPERATION_SOURCE_SCIM:
        stmt = stmt.where(OperationRow.actor == "")
    elif req.source == history_pb2.OPERATION_SOURCE_API_TOKEN:
        stmt = stmt.where(OperationRow.actor == "", OperationRow.token_id != "")
    elif req.source == history_pb2.OPERATION_SOURCE_ADMIN:
        stmt = stmt.where(OperationRow.actor != "")
    if since is not None:
        stmt = stmt.where(OperationRow.time >= since)
    if until is not None:
        stmt = stmt.where(OperationRow.time < until)
    if req.page_token:
        last = session.execute(
            select(OperationRow.time, OperationRow.pk).where(
                OperationRow.tenant_pk == tenant.pk, OperationRow.id == req.page_token
            )
        ).first()
        if last is None:
            raise InvalidValue("page_token is not one this server issued", field="page_token")
        if req.oldest_first:
            after = or_(
                OperationRow.time > last.time,
                and_(OperationRow.time == last.time, OperationRow.pk > last.pk),
            )
        else:
            after = or_(
                OperationRow.time < last.time,
                and_(OperationRow.time == last.time, OperationRow.pk < last.pk),
            )
        stmt = stmt.where(after)
    rows = list(session.execute(stmt).scalars())
    more = len(rows) > size
    rows = rows[:size]
    return history_pb2.ListOperationsResponse(
        operations=[_proto(r, tenant.id) for r in rows],
        next_page_token=rows[-1].id if more else "",
    )
