"""Storage: the SnapshotStore protocol and its backends, chosen by URL."""

from waystation.storage.protocol import (
    Commit,
    Cursor,
    RequestKey,
    RequestRecord,
    RunFilter,
    SnapshotStore,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from waystation.storage.sqlite import SqliteStore


def open_store(url: str) -> SnapshotStore:
    """The backend for `url`: `sqlite:///file.db` (PostgreSQL arrives with issue 7)."""
    if url.startswith("sqlite://"):
        return SqliteStore.from_url(url)
    raise ValueError(f"unsupported database URL {url!r}; expected sqlite:///path.db")


__all__ = [
    "Commit",
    "Cursor",
    "RequestKey",
    "RequestRecord",
    "RunFilter",
    "SnapshotStore",
    "SqliteStore",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]
