"""The local stack: a real Apache Kafka broker and PostgreSQL server, started without Docker."""

from fcl.stack.common import StackError
from fcl.stack.manager import LocalStack, StackStatus

__all__ = ["LocalStack", "StackError", "StackStatus"]
