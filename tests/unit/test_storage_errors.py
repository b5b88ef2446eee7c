"""How driver errors are classed: the real asyncpg exception classes, by SQLSTATE."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from fcl.storage.errors import DatabaseRefused, DatabaseUnavailable, IntegrityViolation, SchemaMismatch, wrap


def _error(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("from the server")


@pytest.mark.parametrize(
    "cls",
    [
        asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006, a failover
        asyncpg.exceptions.LockNotAvailableError,  # 55P03
        asyncpg.exceptions.IdleInTransactionSessionTimeoutError,  # 25P03
        asyncpg.exceptions.InternalServerError,  # XX000
        asyncpg.exceptions.SerializationError,  # 40001
        asyncpg.exceptions.DeadlockDetectedError,  # 40P01
        asyncpg.exceptions.AdminShutdownError,  # 57P01
        asyncpg.exceptions.CannotConnectNowError,  # 57P03
    ],
)
def test_a_failover_a_lock_timeout_or_a_server_fault_is_waited_out(cls: type[asyncpg.PostgresError]) -> None:
    error = wrap(_error(cls))
    assert isinstance(error, DatabaseUnavailable), cls
    assert error.retriable
    assert error.sqlstate == cls.sqlstate


def test_the_same_error_inside_sqlalchemy_is_classed_the_same() -> None:
    inner = _error(asyncpg.exceptions.ReadOnlySQLTransactionError)
    outer = sa_exc.DBAPIError("INSERT …", {}, inner)
    assert isinstance(wrap(outer), DatabaseUnavailable)


@pytest.mark.parametrize(
    ("cls", "kind"),
    [
        (asyncpg.exceptions.UniqueViolationError, IntegrityViolation),
        (asyncpg.exceptions.UndefinedTableError, SchemaMismatch),
        (asyncpg.exceptions.NumericValueOutOfRangeError, DatabaseRefused),
        (asyncpg.exceptions.InvalidTextRepresentationError, DatabaseRefused),
        (asyncpg.exceptions.CharacterNotInRepertoireError, DatabaseRefused),
    ],
)
def test_what_the_data_or_the_schema_breaks_is_refused(cls: type[asyncpg.PostgresError], kind: type) -> None:
    error = wrap(_error(cls))
    assert isinstance(error, kind)
    assert not error.retriable
