"""users.user_name_key: the PRECIS UsernameCaseMapped key (storage.names), was lower().

userName uniqueness (and userName filters) compare this key. Existing keys are
recomputed, tenant by tenant: the oldest user (lowest pk) of names that now
collide (`café` in NFC and in NFD, `ß` and `SS`, fullwidth and plain letters)
keeps the key, the later ones, and names the profile refuses (zero-width and
other disallowed code points: no new user can have them), get the key followed
by U+FFFD and their id, which no mapped name can contain: they stay unique and
readable by id, but a userName filter no longer finds them. Names made only of
ASCII keep their key (the mapping is lower() for them).
Keys are changed in two steps (a unique placeholder first) so that no step
collides with a key another row still holds.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from identity_service.errors import InvalidValue
from identity_service.storage.names import fold, user_name_key

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APART = "\ufffd"


def _precis(name: str) -> str | None:
    try:
        return user_name_key(name)
    except InvalidValue:
        return None


def _rekey(key_of: Callable[[str], str | None]) -> None:
    conn = op.get_bind()
    set_key = sa.text("UPDATE users SET user_name_key = :k WHERE pk = :pk")
    tenants = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT tenant_pk FROM users"))]
    for tenant_pk in tenants:
        rows = conn.execute(
            sa.text(
                "SELECT pk, id, user_name, user_name_key FROM users "
                "WHERE tenant_pk = :t ORDER BY pk"
            ),
            {"t": tenant_pk},
        ).all()
        claimed: set[str] = set()
        changes: list[tuple[int, str]] = []
        for pk, uid, name, current in rows:
            key = key_of(name)
            if key is None or key in claimed:
                key = f"{fold(name) if key is None else key}{_APART}{uid}"
            claimed.add(key)
            if key != current:
                changes.append((pk, key))
        if not changes:
            continue
        # First a placeholder no row holds, then the final keys (unique among all
        # the tenant's rows by construction).
        conn.execute(set_key, [{"pk": pk, "k": f"{_APART}{pk}"} for pk, _ in changes])
        conn.execute(set_key, [{"pk": pk, "k": key} for pk, key in changes])


def upgrade() -> None:
    _rekey(_precis)


def downgrade() -> None:
    _rekey(str.lower)
