"""Everything that reads or writes SQL: the schema (SQLAlchemy 2.0 models and Alembic
migrations), the connection and its error tree, the owner of a job's life (`storage.queue`),
repositories, the outbox relay and the notifications that wake it.

No ORM row or session leaves this package as a result: callers get frozen dataclasses from
`storage.entities`, and driver errors leave as `storage.errors.StorageError`.
"""
