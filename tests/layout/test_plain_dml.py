"""The core's prebuilt INSERT/UPDATE/DELETE statements are plain Core DML.

A statement that names a model's attribute (`UserRow.pk`) rather than its table's
column (`table(UserRow).c.pk`) is ORM-enabled: `Session.execute` then runs it through
the ORM's bulk-persistence layer, which costs more than the statement itself on every
write (a py-spy profile of PATCH showed it; issue #16)."""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.sql.dml import UpdateBase

from identity_service.storage.models import UserRow, table
from identity_service.storage.prepared import Prepared

from .test_module_state import _modules


def _orm_enabled(stmt: UpdateBase) -> bool:
    return stmt._propagate_attrs.get("compile_state_plugin") == "orm"


def test_module_level_dml_is_plain_core() -> None:
    found = []
    for module in _modules():
        if not module.__name__.startswith("identity_service."):
            continue
        for name, value in vars(module).items():
            # Prepared ones too: Session.execute may still be given their statement.
            stmt = value.stmt if isinstance(value, Prepared) else value
            if isinstance(stmt, UpdateBase):
                found.append(name)
                assert not _orm_enabled(stmt), f"{module.__name__}.{name} is ORM-enabled"
    # The write path's statements are among those checked.
    assert {"_UPDATE_USER", "_DELETE_VALUES", "_INSERT_USER", "_BUMP_REVISION"} <= set(found), found


def test_the_check_sees_an_orm_enabled_statement() -> None:
    assert _orm_enabled(update(table(UserRow)).where(UserRow.pk == 1))
    assert _orm_enabled(delete(table(UserRow)).where(UserRow.pk == 1))
    assert not _orm_enabled(update(table(UserRow)).where(table(UserRow).c.pk == 1))
