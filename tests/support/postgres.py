"""A real PostgreSQL server for tests, and a fresh database per use.

`WAYSTATION_TEST_POSTGRES_URL` names a server to use (CI starts Debian's PostgreSQL and sets
it); without it, an embedded server from the `pgserver` package (real PostgreSQL binaries
shipped on PyPI) is started once per test process in a temporary folder, so `make test`
needs nothing but Python.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_lock = threading.Lock()
_server: dict[str, Any] = {}


def server_url() -> str:
    """The URL of the test server's `postgres` database."""
    given = os.environ.get("WAYSTATION_TEST_POSTGRES_URL")
    if given:
        return given
    with _lock:
        if "url" not in _server:
            folder = tempfile.mkdtemp(prefix="waystation-pg-")
            with warnings.catch_warnings():
                # pgserver's platformdirs warns about XDG_RUNTIME_DIR on servers and in CI.
                warnings.simplefilter("ignore")
                import pgserver

                server = pgserver.get_server(folder, cleanup_mode="stop")
            _server.update(url=server.get_uri(), server=server, folder=folder)
            atexit.register(_stop)
        url: str = _server["url"]
        return url


def _stop() -> None:
    server = _server.get("server")
    if server is not None:
        server.cleanup()
        shutil.rmtree(_server["folder"], ignore_errors=True)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_url(key: str) -> str:
    """A database named after `key` (created empty on first use) on the test server."""
    name = "t_" + hashlib.sha256(key.encode()).hexdigest()[:20]
    base = server_url()

    async def create() -> None:
        conn = await asyncpg.connect(base)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    # Runs on a thread of its own: callers may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()
    return with_database(base, name)
