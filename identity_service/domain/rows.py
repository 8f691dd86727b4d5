"""Row helpers the user and group modules share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from scim_identity_api.v1 import changes_pb2, groups_pb2

from ..errors import VersionMismatch
from ..storage import events
from ..storage.models import GroupRow, MemberRow, table, utcnow
from .validate import check_expected_version

T = TypeVar("T")
#: Ids per IN (...) list: far below SQLite's variable limit, small enough for plans.
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def check_version(row: Any, expected: int) -> None:
    """ABORTED (REASON_VERSION_MISMATCH) unless `expected` is 0 or the row's version."""
    check_expected_version(expected)
    if expected and row.version != expected:
        raise VersionMismatch(
            f"version mismatch: expected {expected}, the resource is at {row.version}",
            field="version",
            current_version=row.version,
        )


def leave_all_groups(
    session: Session, member_id: str, member_type: int
) -> list[changes_pb2.ChangeEvent]:
    """Removes a user or group from every group it belongs to, before it is deleted:
    three statements whatever the number of groups, and one group.member_removed
    event per group so that subscribers mirroring membership see it go."""
    rows = session.execute(
        select(GroupRow.pk, GroupRow.id)
        .join(MemberRow, MemberRow.group_pk == GroupRow.pk)
        .where(MemberRow.member_id == member_id)
        .order_by(GroupRow.pk)
    ).all()
    if not rows:
        return []
    session.execute(delete(MemberRow).where(MemberRow.member_id == member_id))
    now = utcnow()
    for chunk in chunks([pk for pk, _ in rows]):
        session.execute(
            update(table(GroupRow))
            .where(GroupRow.pk.in_(chunk))
            .values(
                member_count=GroupRow.member_count - 1,
                version=GroupRow.version + 1,
                last_modified=now,
            )
        )
    member = groups_pb2.Member(value=member_id, type=groups_pb2.MemberType.ValueType(member_type))
    return [
        events.event(
            changes_pb2.EVENT_TYPE_GROUP_MEMBER_REMOVED,
            "Group",
            group_id,
            membership=changes_pb2.MembershipChange(group_id=group_id, members=[member]),
            changed_attributes=["members"],
        )
        for _, group_id in rows
    ]
