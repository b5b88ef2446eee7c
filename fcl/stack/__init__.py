"""The local stack: a real Apache Kafka broker (or cluster), PostgreSQL server and object store,
started without Docker. `LocalStack` is imported on first use: the stack needs the service extra
(the object store's client), and an install without it still has `fcl.stack.common`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fcl.stack.common import StackError

if TYPE_CHECKING:
    from fcl.stack.manager import LocalStack, StackStatus

__all__ = ["LocalStack", "StackError", "StackStatus"]


def __getattr__(name: str) -> Any:
    if name in ("LocalStack", "StackStatus"):
        from fcl.stack import manager

        return getattr(manager, name)
    raise AttributeError(f"module 'fcl.stack' has no attribute {name!r}")
