"""What one Database remembers between calls, owned by it and reached through the
sessions (and quick reads) it makes: `memo_of(session)`. Nothing of it lives in a
module: a process may serve more than one database (the tests do), and each keeps
its own, dropped with it."""

from __future__ import annotations

from typing import Any

#: session.info key of the Database's Memo.
MEMO = "identity.memo"

#: Entries a table may hold before it is emptied (callers passing ever new keys
#: would otherwise grow it forever).
MAX_POSITIONS = 4096
MAX_TOTALS = 4096
MAX_LOOKUPS = 256
MAX_POLICIES = 512


class Memo:
    """Caches of one database's paging and policies (see listing.py, policy.py)."""

    __slots__ = ("lookups", "policies", "positions", "totals")

    def __init__(self) -> None:
        #: (table, query hash, rows before the next page) -> (tenant revision, (sort
        #: key, pk) of the last row so far): where a startIndex walk's previous page
        #: ended.
        self.positions: dict[tuple[str, str, int], tuple[int, tuple[Any, int]]] = {}
        #: (table, query hash) -> (tenant revision, COUNT(*)) of recent exact totals.
        self.totals: dict[tuple[str, str], tuple[int, int]] = {}
        #: (id of a long-lived select, attribute) -> (the select, its lookup statement).
        self.lookups: dict[tuple[int, str], tuple[Any, Any]] = {}
        #: Stored policies by their JSON (keys sorted) -> the parsed policy and what
        #: calls derive from it (policy.py).
        self.policies: dict[bytes, Any] = {}


def memo_of(session: Any) -> Memo:
    """The Memo of the Database that made `session` (a Session or a quick read)."""
    memo: Memo = session.info[MEMO]
    return memo
