"""Everything that reads or writes SQL: the schema (SQLAlchemy 2.0 models and Alembic
migrations), the connection, and repositories that hand plain domain objects upward.

No ORM row or session leaves this package: callers get frozen dataclasses from
`storage.entities`.
"""
