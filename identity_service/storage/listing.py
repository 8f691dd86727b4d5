"""Filtered, sorted, paged lists over users or groups: index paging and keyset cursors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from scim_identity_api.v1 import common_pb2

from ..errors import InvalidCursor, TooMany
from ..settings import Settings
from .db import Reader
from .filters import Catalog, Equality, compile_filter, equality, sort_key
from .memo import MAX_LOOKUPS, MAX_POSITIONS, MAX_TOTALS, Memo, memo_of
from .prepared import Prepared


@dataclass
class PageResult:
    rows: list[Any]
    total: int
    start_index: int
    next_cursor: str


def _query_hash(tenant_pk: int, f: common_pb2.Filter, sort: common_pb2.Sort | None) -> str:
    h = hashlib.sha256(str(tenant_pk).encode())
    h.update(f.SerializeToString(deterministic=True))
    if sort is not None:
        h.update(sort.SerializeToString(deterministic=True))
    return h.hexdigest()[:16]


def _encode_cursor(key: Any, pk: int, qh: str) -> str:
    if isinstance(key, datetime):
        key = {"t": key.isoformat()}
    raw = json.dumps({"k": key, "p": pk, "q": qh}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_KEY_TYPES: dict[str | None, tuple[type, ...]] = {
    None: (type(None),),
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
    "dateTime": (datetime,),
}


def _decode_cursor(cursor: str, qh: str, key_type: str | None) -> tuple[Any, int]:
    bad = InvalidCursor("the cursor is not one this server issued", field="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        key, pk, q = data["k"], int(data["p"]), str(data["q"])
        if isinstance(key, dict):
            key = datetime.fromisoformat(key["t"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise bad from None
    # Cursors are not signed: a key of the wrong type must not reach the SQL.
    allowed = _KEY_TYPES.get(key_type, ())
    if not isinstance(key, allowed) or (key_type == "number" and isinstance(key, bool)):
        raise bad
    if isinstance(key, datetime) and key.tzinfo is None:
        raise bad
    if q != qh:
        raise InvalidCursor(
            "the cursor belongs to a different query (filter or sort changed)", field="cursor"
        )
    return key, pk


def _lookup_statements(
    memo: Memo, columns: Select[*tuple[Any, ...]], model: Any, lookup: Equality
) -> tuple[Prepared, Prepared]:
    """The lookup's page (its first `n` rows by pk) and its count, built once per
    long-lived select and attribute."""
    lookups = memo.lookups
    key = (id(columns), lookup.name)
    hit = lookups.get(key)
    if hit is not None and hit[0] is columns:
        found: tuple[Prepared, Prepared] = hit[1]
        return found
    where = (
        model.tenant_pk == bindparam("t"),
        lookup.column.is_not(None),
        lookup.column == bindparam("v"),
    )
    page = Prepared(columns.where(*where).order_by(model.pk.asc()).limit(bindparam("n")))
    count = Prepared(select(func.count().label("n")).select_from(model).where(*where))
    if len(lookups) > MAX_LOOKUPS:
        lookups.clear()
    lookups[key] = (columns, (page, count))
    return page, count


def idp_lookup(
    catalog: Catalog,
    f: common_pb2.Filter | None,
    sort: common_pb2.Sort | None,
    page: common_pb2.Page,
) -> Equality | None:
    """The IdPs' lookup, `attr eq "text"` on an indexed column, as the first page of an
    unsorted list paged by index: its Equality, else None. The one test of it: the
    servicers ask it to pick a quick read (lookup_page), page_of to run the same."""
    if (
        f is None
        or (sort is not None and sort.path.attribute)
        or page.use_cursor
        or page.start_index > 1
    ):
        return None
    return equality(catalog, f)


def page_size(page: common_pb2.Page, settings: Settings) -> int:
    """The page's row count, checked (and the page's other limits with it)."""
    if page.HasField("count"):
        count = page.count
        if count < 0:
            raise TooMany("count must not be negative", field="count")
        if count > settings.max_page_size:
            raise TooMany(
                f"count {count} exceeds the largest page, {settings.max_page_size}",
                field="count",
            )
    else:
        count = settings.default_page_size
    if page.start_index < 0:
        raise TooMany("start_index is 1-based and must not be negative", field="start_index")
    if page.start_index and page.use_cursor:
        raise InvalidCursor("use either start_index or a cursor, not both", field="cursor")
    return count


def lookup_page(
    reader: Reader,
    *,
    catalog: Catalog,
    model: Any,
    columns: Select[*tuple[Any, ...]],
    tenant_pk: int,
    f: common_pb2.Filter,
    page: common_pb2.Page,
    settings: Settings,
) -> PageResult:
    """The page of a list that is the IdPs' lookup (idp_lookup, which the caller
    checked): prepared statements only, so it runs as a quick read."""
    lookup = idp_lookup(catalog, f, None, page)
    if lookup is None:
        raise AssertionError("lookup_page of a list that is no IdP lookup")
    count = page_size(page, settings)
    return _lookup_rows(
        reader, model=model, columns=columns, tenant_pk=tenant_pk, lookup=lookup, count=count
    )


def _lookup_rows(
    reader: Reader,
    *,
    model: Any,
    columns: Select[*tuple[Any, ...]],
    tenant_pk: int,
    lookup: Equality,
    count: int,
) -> PageResult:
    """The IdPs' `userName eq "..."`: the first `count` matches in pk order, the page
    an unsorted index walk gives, and their total (one index read, and a COUNT only
    when the page is full)."""
    page_stmt, count_stmt = _lookup_statements(memo_of(reader), columns, model, lookup)
    params = {"t": tenant_pk, "v": lookup.value}
    rows = page_stmt.run(reader, {**params, "n": count}) if count > 0 else []
    if len(rows) < count:
        return PageResult(rows, len(rows), 1, "")
    total = count_stmt.first(reader, params)
    # A quick read on PostgreSQL counts in a snapshot of its own (Database.read_quick):
    # never fewer than the page it answers with.
    return PageResult(rows, max(int(total[0]) if total is not None else 0, len(rows)), 1, "")


def page_of(
    session: Session,
    *,
    catalog: Catalog,
    model: Any,
    columns: Select[*tuple[Any, ...]],  # any row shape with a `pk` column
    tenant_pk: int,
    f: common_pb2.Filter | None,
    sort: common_pb2.Sort | None,
    page: common_pb2.Page,
    settings: Settings,
    revision: int | None = None,
    count_all: int | None = None,
) -> PageResult:
    """One page of `columns` (a select over `model`) for the tenant, plus the exact total.
    `columns` should be a long-lived (module-level) select: simple lookups cache
    their statement by it. `revision`: the tenant's revision read in the same
    snapshot, which lets an exact total be reused until the tenant changes.
    `count_all`: how many rows of `model` the tenant has (read in the same snapshot),
    the total of an unfiltered list."""
    count = page_size(page, settings)
    lookup = idp_lookup(catalog, f, sort, page)
    if lookup is not None:
        return _lookup_rows(
            session, model=model, columns=columns, tenant_pk=tenant_pk, lookup=lookup, count=count
        )
    memo = memo_of(session)

    q = _Query(
        session,
        memo=memo,
        catalog=catalog,
        model=model,
        columns=columns,
        tenant_pk=tenant_pk,
        f=f,
        sort=sort,
        revision=revision,
        count_all=count_all,
    )
    if page.use_cursor:
        return _cursor_page(q, page.cursor, count)
    return _index_page(q, max(page.start_index, 1), count)


class _Query:
    """One list query past the lookup: its condition, order and statement, and the
    exact total, counted at most once per tenant revision (the Database's Memo)."""

    __slots__ = (
        "cond",
        "count_all",
        "desc",
        "f",
        "key",
        "key_type",
        "memo",
        "model",
        "order",
        "revision",
        "session",
        "sort",
        "stmt",
        "tenant_pk",
    )

    def __init__(
        self,
        session: Session,
        *,
        memo: Memo,
        catalog: Catalog,
        model: Any,
        columns: Select[*tuple[Any, ...]],
        tenant_pk: int,
        f: common_pb2.Filter | None,
        sort: common_pb2.Sort | None,
        revision: int | None,
        count_all: int | None,
    ) -> None:
        self.session, self.memo, self.model, self.tenant_pk = session, memo, model, tenant_pk
        self.f, self.sort, self.revision, self.count_all = f, sort, revision, count_all
        self.cond = and_(model.tenant_pk == tenant_pk, compile_filter(catalog, f, tenant_pk))
        self.key: ColumnElement[Any] | None = None
        self.key_type: str | None = None
        self.desc = False
        if sort is not None and sort.path.attribute:
            self.key, self.key_type = sort_key(catalog, sort.path)
            self.desc = sort.descending
        key, desc = self.key, self.desc
        order = []
        if key is not None:
            order.append(key.desc() if desc else key.asc())
        order.append(model.pk.desc() if desc else model.pk.asc())
        self.order = order
        stmt = columns.where(self.cond).order_by(*order)
        if key is not None:
            stmt = stmt.add_columns(key.label("_sort_key"))
        self.stmt = stmt

    def query_hash(self, *, sorted_: bool) -> str:
        return _query_hash(
            self.tenant_pk, self.f or common_pb2.Filter(), self.sort if sorted_ else None
        )

    def known_total(self) -> int | None:
        """The exact total when it costs no COUNT, else None."""
        unfiltered = self.f is None or self.f.WhichOneof("node") is None
        if unfiltered and self.count_all is not None:
            return self.count_all
        # Every write to a tenant moves its revision, so a count taken at the same
        # revision (in this snapshot) is still exact: a walk through a quiet
        # directory counts it once, not on every page.
        if self.revision is not None:
            known = self.memo.totals.get(self._totals_key())
            if known is not None and known[0] == self.revision:
                return known[1]
        return None

    def _totals_key(self) -> tuple[str, str]:
        return (self.model.__tablename__, self.query_hash(sorted_=False))

    def exact_total(self) -> int:
        known = self.known_total()
        if known is not None:
            return known
        stmt = select(func.count()).select_from(self.model).where(self.cond)
        total = int(self.session.execute(stmt).scalar_one())
        if self.revision is not None:
            totals = self.memo.totals
            if len(totals) >= MAX_TOTALS:
                totals.clear()
            totals[self._totals_key()] = (self.revision, total)
        return total

    def after(self, last_key: Any, last_pk: int) -> ColumnElement[bool]:
        """Rows after (last_key, last_pk) in this order: a keyset condition."""
        model, key, desc = self.model, self.key, self.desc
        pk_cmp: ColumnElement[bool] = model.pk < last_pk if desc else model.pk > last_pk
        if key is None:
            return pk_cmp
        key_cmp = key < last_key if desc else key > last_key
        return or_(key_cmp, and_(key == last_key, pk_cmp))


def _index_page(q: _Query, start: int, count: int) -> PageResult:
    """Paging by startIndex (RFC 7644 §3.4.2.4): `count` rows from the start-th."""
    if count == 0:
        return PageResult([], q.exact_total(), start, "")
    session, model, key, stmt, revision = q.session, q.model, q.key, q.stmt, q.revision
    positions = q.memo.positions
    # IdPs import by walking startIndex 1, 1+n, 1+2n, ...: where the previous page
    # of this query ended at this same revision (nothing changed since), the next
    # one starts after its last row, a keyset read instead of an OFFSET.
    position = (model.__tablename__, q.query_hash(sorted_=True)) if revision is not None else None
    resume = positions.get((*position, start - 1)) if position is not None else None
    if resume is not None and resume[0] == revision:
        rows = list(session.execute(stmt.where(q.after(*resume[1])).limit(count)))
    elif (
        start > 1
        and key is None
        and (total := q.known_total()) is not None
        and (start - 1 > total // 2)
    ):
        # A deep page in the second half of an unsorted list whose exact total is
        # known: its keys are counted from the end of the (tenant_pk, pk) index,
        # so the last page costs what the first does, not a walk past every row.
        after_page = total - (start - 1) - count  # rows after this page
        size = count + min(after_page, 0)
        keys = (
            select(model.pk)
            .where(q.cond)
            .order_by(model.tenant_pk.desc(), model.pk.desc())
            .offset(max(after_page, 0))
            .limit(size)
        )
        stmt = stmt.where(model.pk.in_(keys.scalar_subquery()))
        rows = list(session.execute(stmt)) if size > 0 else []
    elif start > 1:
        # Deep pages: find the page's keys on the (tenant_pk, pk) index first,
        # then read only those rows, instead of reading and skipping every row
        # before them (OFFSET 999,000 read whole rows, bodies included).
        # Unsorted, the order is spelled as the index's, (tenant_pk, pk): the same
        # order within one tenant, and PostgreSQL then reads the index alone too.
        key_order = q.order if key is not None else [model.tenant_pk.asc(), model.pk.asc()]
        keys = select(model.pk).where(q.cond).order_by(*key_order).offset(start - 1).limit(count)
        stmt = stmt.where(model.pk.in_(keys.scalar_subquery()))
        rows = list(session.execute(stmt))
    else:
        rows = list(session.execute(stmt.limit(count)))
    if position is not None and revision is not None and len(rows) == count:
        last = rows[-1]
        if len(positions) >= MAX_POSITIONS:
            positions.clear()
        positions[(*position, start - 1 + count)] = (
            revision,
            (last._sort_key if key is not None else None, last.pk),
        )
    # A short, non-empty page ends the list, so it gives the total without a COUNT:
    # the common IdP lookup (`userName eq ...`) is then a single index read.
    if 0 < len(rows) < count or (not rows and start == 1):
        return PageResult(rows, start - 1 + len(rows), start, "")
    return PageResult(rows, q.exact_total(), start, "")


def _cursor_page(q: _Query, cursor: str, count: int) -> PageResult:
    """Paging by keyset cursor: `count` rows after the cursor's row, and the next cursor."""
    qh = q.query_hash(sorted_=True)
    stmt = q.stmt
    if cursor:
        stmt = stmt.where(q.after(*_decode_cursor(cursor, qh, q.key_type)))
    if count == 0:
        return PageResult([], q.exact_total(), 1, cursor)
    rows = list(q.session.execute(stmt.limit(count + 1)))
    more = len(rows) > count
    rows = rows[:count]
    total = len(rows) if not cursor and not more else q.exact_total()
    nxt = ""
    if more:
        last = rows[-1]
        nxt = _encode_cursor(last._sort_key if q.key is not None else None, last.pk, qh)
    return PageResult(rows, total, 1, nxt)
