"""Storage: the SnapshotStore protocol and its backends, chosen by URL."""

from waystation.storage.protocol import (
    Commit,
    Cursor,
    RequestKey,
    RequestRecord,
    RunFilter,
    SchemaOutOfDate,
    SnapshotStore,
    StoreConflict,
    StoreError,
    StoreInUse,
    StoreUnavailable,
)
from waystation.storage.sqlite import SqliteStore


def open_store(url: str, *, migrate: bool = True) -> SnapshotStore:
    """The backend for `url`: `sqlite:///file.db` or `postgresql://user@host/db`. With
    `migrate=False` a store only checks that its schema is current."""
    if url.startswith("sqlite://"):
        return SqliteStore.from_url(url, migrate=migrate)
    if url.startswith(("postgresql://", "postgres://")):
        from waystation.storage.postgres import PostgresStore

        return PostgresStore(url, migrate=migrate)
    raise ValueError(
        f"unsupported database URL {url!r}; expected sqlite:///path.db or postgresql://..."
    )


__all__ = [
    "Commit",
    "Cursor",
    "RequestKey",
    "RequestRecord",
    "RunFilter",
    "SchemaOutOfDate",
    "SnapshotStore",
    "SqliteStore",
    "StoreConflict",
    "StoreError",
    "StoreInUse",
    "StoreUnavailable",
    "open_store",
]
