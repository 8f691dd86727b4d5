"""`/Bulk` (RFC 7644 §3.7): many operations in one request, with `bulkId`
references between them and `failOnErrors`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from falcon.asgi import Request, Response

from ..errors import ScimError, invalid_syntax, invalid_value
from ..history import KIND_BULK, KIND_CREATE, KIND_DELETE, KIND_UPDATE, OpInfo, Recorder
from ..http import Call, Result, json_object, read_json, send
from ..scim.projection import Projection
from ..scim.schemas import BULK_REQUEST, BULK_RESPONSE
from ..settings import Settings
from .common import ResourceService, call_of

_METHODS = {"POST": KIND_CREATE, "PUT": KIND_UPDATE, "PATCH": KIND_UPDATE, "DELETE": KIND_DELETE}
_BULK_PREFIX = "bulkId:"


@dataclass(slots=True)
class _Op:
    index: int
    method: str
    path: str
    bulk_id: str | None
    version: str | None
    data: Any


class _Unresolved(Exception):
    def __init__(self, bulk_id: str) -> None:
        super().__init__(bulk_id)
        self.bulk_id = bulk_id


def _ci(obj: dict[str, Any], name: str) -> Any:
    low = name.lower()
    return next((v for k, v in obj.items() if k.lower() == low), None)


def _parse(body: dict[str, Any], max_ops: int) -> tuple[list[_Op], int | None]:
    schemas = _ci(body, "schemas")
    if schemas is not None and (
        not isinstance(schemas, list) or BULK_REQUEST not in [str(s) for s in schemas]
    ):
        raise invalid_syntax(f"a bulk request's 'schemas' must contain {BULK_REQUEST!r}")
    raw_ops = _ci(body, "Operations")
    if not isinstance(raw_ops, list) or not raw_ops:
        raise invalid_syntax("a bulk request needs a non-empty 'Operations' array")
    if len(raw_ops) > max_ops:
        # RFC 7644 §3.7.4: over maxOperations is 413 Payload Too Large.
        raise ScimError(
            413,
            f"The bulk request has {len(raw_ops)} operations; the maximum is {max_ops} "
            "(ServiceProviderConfig bulk.maxOperations).",
        )
    fail_on_errors = _ci(body, "failOnErrors")
    if fail_on_errors is not None and (
        isinstance(fail_on_errors, bool)
        or not isinstance(fail_on_errors, int)
        or fail_on_errors < 1
    ):
        raise invalid_value("'failOnErrors' must be an integer of at least 1")
    ops: list[_Op] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_ops):
        where = f"Operations[{i}]"
        if not isinstance(raw, dict):
            raise invalid_syntax(f"{where} must be an object")
        method = _ci(raw, "method")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise invalid_value(f"{where}.method must be POST, PUT, PATCH or DELETE")
        path = _ci(raw, "path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise invalid_value(f"{where}.path must be a resource path such as '/Users'")
        bulk_id = _ci(raw, "bulkId")
        if bulk_id is not None and (not isinstance(bulk_id, str) or not bulk_id):
            raise invalid_value(f"{where}.bulkId must be a non-empty string")
        if method.upper() == "POST" and bulk_id is None:
            raise invalid_value(f"{where}: a POST needs a 'bulkId' (RFC 7644 §3.7)")
        if bulk_id is not None:
            if bulk_id in seen:
                raise invalid_value(f"{where}: bulkId {bulk_id!r} is used twice")
            seen.add(bulk_id)
        version = _ci(raw, "version")
        if version is not None and not isinstance(version, str):
            raise invalid_value(f"{where}.version must be an ETag string")
        data = _ci(raw, "data")
        if method.upper() in ("POST", "PUT", "PATCH") and not isinstance(data, dict):
            raise invalid_value(f"{where}: {method.upper()} needs a 'data' object")
        ops.append(_Op(i, method.upper(), path, bulk_id, version, data))
    return ops, fail_on_errors


def _substitute(value: Any, ids: dict[str, str]) -> Any:
    """Replaces "bulkId:x" strings with the id created for x (RFC 7644 §3.7.2)."""
    if isinstance(value, str) and value.startswith(_BULK_PREFIX):
        ref = value[len(_BULK_PREFIX) :]
        if ref not in ids:
            raise _Unresolved(ref)
        return ids[ref]
    if isinstance(value, list):
        return [_substitute(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, ids) for k, v in value.items()}
    return value


class BulkResource:
    def __init__(
        self,
        services: dict[str, ResourceService],
        settings: Settings,
        recorder: Recorder,
    ) -> None:
        self._services = services
        self._settings = settings
        self._recorder = recorder

    async def on_post(self, req: Request, resp: Response) -> None:
        req.context.op = OpInfo(KIND_BULK, "Bulk")
        body = json_object(await read_json(req, self._settings.max_payload_bytes))
        ops, fail_on_errors = _parse(body, self._settings.max_bulk_operations)
        call = call_of(req)  # authenticated up front (see the middleware)
        ids: dict[str, str] = {}
        results: dict[int, dict[str, Any]] = {}
        pending = list(ops)
        errors = 0
        stop = False
        # Operations run in order; one that refers to a bulkId not created yet
        # waits for a later pass (RFC 7644 §3.7.2 lets clients order freely).
        while pending and not stop:
            waiting: list[_Op] = []
            progressed = False
            for op in pending:
                try:
                    path = "/".join(_substitute(part, ids) for part in op.path.split("/"))
                    data = _substitute(op.data, ids)
                except _Unresolved as unresolved:
                    if any(o.bulk_id == unresolved.bulk_id for o in pending if o is not op):
                        waiting.append(op)
                        continue
                    outcome = self._error_entry(
                        call,
                        op,
                        invalid_value(
                            f"bulkId {unresolved.bulk_id!r} does not name a resource created "
                            "by a successful POST of this request"
                        ),
                    )
                else:
                    outcome = await self._run(call, op, path, data, ids)
                progressed = True
                results[op.index] = outcome
                if int(outcome["status"]) >= 400:
                    errors += 1
                    if fail_on_errors is not None and errors >= fail_on_errors:
                        stop = True  # RFC 7644 §3.7.3
                        break
            if not progressed:
                for op in waiting:  # a cycle of references
                    results[op.index] = self._error_entry(
                        call, op, invalid_value("circular bulkId references cannot be resolved")
                    )
                break
            pending = waiting
        doc = {
            "schemas": [BULK_RESPONSE],
            "Operations": [results[i] for i in sorted(results)],
        }
        send(resp, Result(200, doc))

    def _error_entry(self, call: Call, op: _Op, err: ScimError) -> dict[str, Any]:
        entry: dict[str, Any] = {"method": op.method}
        if op.bulk_id is not None:
            entry["bulkId"] = op.bulk_id
        entry["status"] = str(err.status)
        entry["response"] = err.body(call.secret)
        return entry

    async def _run(
        self, call: Call, op: _Op, path: str, data: Any, ids: dict[str, str]
    ) -> dict[str, Any]:
        started = time.perf_counter()
        # Each operation is a request of its own (RFC 7644 §3.7): it gets the
        # request deadline, so a long bulk is bounded per operation, not as a whole.
        call.deadline = time.monotonic() + self._settings.request_timeout_seconds
        parts = [p for p in path.split("/") if p]
        service = self._services.get(parts[0].lower()) if parts else None
        info = OpInfo(_METHODS[op.method], service.rtype.name if service else "")
        error: ScimError | None = None
        try:
            if service is None or len(parts) > 2:
                raise invalid_value(f"{path!r} is not a /Users or /Groups resource path")
            rid = parts[1] if len(parts) == 2 else ""
            info.resource_id = rid
            if_match = {op.version.removeprefix("W/").strip('"')} if op.version else None
            if op.method == "POST":
                if rid:
                    raise invalid_value(f"POST goes to {'/' + parts[0]!r}, not to a resource")
                result = await service.create(call, data, Projection())
            elif not rid:
                raise invalid_value(f"{op.method} needs a resource path such as '/Users/<id>'")
            elif op.method == "PUT":
                result = await service.replace(call, rid, data, Projection(), if_match)
            elif op.method == "PATCH":
                result = await service.patch(call, rid, data, Projection(), if_match)
            else:
                result = await service.delete(call, rid, if_match)
        except ScimError as err:
            error = err
            entry = self._error_entry(call, op, err)
            status = err.status
        else:
            status = result.status
            info.resource_id, info.note = result.resource_id, result.note
            entry = {"method": op.method}
            if op.bulk_id is not None:
                entry["bulkId"] = op.bulk_id
                if op.method == "POST":
                    ids[op.bulk_id] = result.resource_id
            if result.body is not None and "meta" in result.body:
                entry["location"] = result.body["meta"].get("location")
            if "ETag" in result.headers:
                entry["version"] = result.headers["ETag"]
            entry["status"] = str(status)
        self._recorder.record(
            call,
            method=op.method,
            info=info,
            status=status,
            error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        return entry
