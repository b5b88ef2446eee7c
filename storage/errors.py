"""Storage's one error tree. Driver errors (asyncpg, SQLAlchemy, sockets) are wrapped at the
boundary (`Database.transaction`, `wrap`) into these, `raise ... from` the original, and every
error says with `retriable` whether the same work may succeed later. Callers read that attribute;
none of them matches a driver's class names.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc as sa_exc


class StorageError(Exception):
    """The database could not do what was asked. `retriable`: trying again later may help (a
    server that is down or restarting, a deadlock) or not (a constraint the data breaks)."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable
        self.sqlstate = sqlstate


class DatabaseUnavailable(StorageError):
    """The server cannot be reached, is starting or stopping, or aborted the transaction for a
    reason of its own (serialization, deadlock)."""

    retriable = True


class DatabaseRefused(StorageError):
    """The server refused the statement for a reason of the data or the schema."""

    retriable = False


class SchemaMismatch(DatabaseRefused):
    """The database lacks a table, column or function the code uses (SQLSTATE class 42 or 3F): its
    schema is not the code's (`fcl migrate`). Never the fault of the data being written."""


class IntegrityViolation(DatabaseRefused):
    """A constraint refused the data (SQLSTATE class 23)."""


# Lifecycle outcomes the queue reports (storage.queue); not driver errors, but of the same tree.
class LeaseLost(StorageError):
    """The job's lease is held by another worker now (it expired and was reclaimed), or the job
    left `in_progress`: the worker that lost it may record nothing."""

    retriable = False


class JobStateConflict(StorageError):
    """The job is not in a state that allows the operation."""

    retriable = False


class AlreadyChampion(StorageError):
    """A promote of the version that already serves."""

    retriable = False


class VersionDeleted(StorageError):
    """The version was removed by the retention: it cannot serve again."""

    retriable = False


class IdempotencyKeyReused(StorageError):
    """An Idempotency-Key came back with another request."""

    retriable = False


class ChampionNotExpected(StorageError):
    """The caller said which version it expects to serve, and another one serves."""

    retriable = False


class ChampionMoved(StorageError):
    """The champion changed since the caller read it: judge the candidate against the new one."""

    retriable = True


# SQLSTATE classes worth waiting out: connection exception, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention (shutdown, cannot connect now), system
# error.
_RETRIABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# Single states of other classes that a failover, a held lock or a server fault raises and that
# say nothing about the data: read-only during a failover (25006), lock timeout (55P03), the idle
# in transaction timeout (25P03), an internal error of the server (XX000).
_RETRIABLE_SQLSTATES = frozenset({"25006", "55P03", "25P03", "XX000"})
_DRIVER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.SQLAlchemyError,
    asyncpg.PostgresError,
    *_DRIVER_UNAVAILABLE,
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


# The SQLSTATEs our own SQL functions raise (migration 0025: fcl_complete_job), and what they mean.
_RAISED_BY_FUNCTIONS: dict[str, type[StorageError]] = {
    "FC001": LeaseLost,
    "FC002": ChampionMoved,
    "FC003": JobStateConflict,
}


def wrap(exc: BaseException) -> StorageError:
    """The storage error for a driver error (a StorageError is returned as it is)."""
    if isinstance(exc, StorageError):
        return exc
    chain = _chain(exc)
    sqlstate = next((s for s in (getattr(e, "sqlstate", None) for e in chain) if isinstance(s, str)), None)
    reason = _first_line(next((e for e in chain if isinstance(e, asyncpg.PostgresError)), chain[-1]))
    if sqlstate in _RAISED_BY_FUNCTIONS:
        return _RAISED_BY_FUNCTIONS[sqlstate](reason)
    if sqlstate is not None:
        if sqlstate[:2] in _RETRIABLE_SQLSTATE_CLASSES or sqlstate in _RETRIABLE_SQLSTATES:
            return DatabaseUnavailable(reason, sqlstate=sqlstate)
        if sqlstate[:2] == "23":
            return IntegrityViolation(reason, sqlstate=sqlstate)
        if sqlstate[:2] in ("42", "3F"):
            return SchemaMismatch(f"{reason} (is the database migrated? run `fcl migrate`)", sqlstate=sqlstate)
        return DatabaseRefused(reason, sqlstate=sqlstate)
    if any(isinstance(e, _DRIVER_UNAVAILABLE) or getattr(e, "connection_invalidated", False) for e in chain):
        return DatabaseUnavailable(f"the database cannot be reached: {reason}")
    return DatabaseRefused(reason)
