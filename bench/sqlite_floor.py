"""The storage floor: one small row per transition written with aiosqlite, durably.

`python -m bench.sqlite_floor --db PATH --writes N` prints one JSON line. The file gets the
service's PRAGMAS (WAL, ...) from `waystation.storage.sqlite` with `synchronous=FULL`: every
write is fsynced before it returns, which is what the service does for a transition that a
caller is answered after (it commits with NORMAL and fsyncs the WAL itself). Each row is
about the size of a step record. Three ways, each on one connection:
- `seq`: one write after another, each its own transaction (one awaited call, one fsync).
- `c64`: 64 concurrent writers, each write its own transaction (aiosqlite runs them one by
  one: what a server without group commit gets).
- `c64_grouped`: 64 concurrent writers whose writes queue up and are committed together
  (BEGIN IMMEDIATE, one executemany, COMMIT: three awaited calls and one fsync per batch),
  the floor for a server that groups concurrent transitions into one commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiosqlite

from waystation.storage.sqlite import PRAGMAS

ROW = '{"status":"success","payload":{"value":1},"output":{"value":2},"started_at":1.0}'
INSERT = "INSERT INTO t (run_id, path, record) VALUES (?, ?, ?)"


async def connect(path: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    for pragma in [*PRAGMAS, "PRAGMA synchronous=FULL"]:
        await db.execute(pragma)
    await db.execute(
        "CREATE TABLE IF NOT EXISTS t (run_id TEXT, path TEXT, record TEXT,"
        " PRIMARY KEY (run_id, path)) WITHOUT ROWID"
    )
    return db


async def sequential(db: aiosqlite.Connection, n: int, tag: str) -> list[float]:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await db.execute(INSERT, (tag, str(i), ROW))
        lat.append((time.perf_counter() - t) * 1000)
    return lat


async def concurrent(db: aiosqlite.Connection, n: int, tag: str, width: int = 64) -> list[float]:
    lat: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            t = time.perf_counter()
            await db.execute(INSERT, (tag, str(i), ROW))
            lat.append((time.perf_counter() - t) * 1000)

    await asyncio.gather(*(worker() for _ in range(width)))
    return lat


class Grouped:
    """The least a group commit does: queue, one transaction per batch, wake the writers."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.queue: list[tuple[tuple[str, str, str], asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None
        self.batches = 0

    async def write(self, row: tuple[str, str, str]) -> None:
        future = asyncio.get_running_loop().create_future()
        self.queue.append((row, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.drain())
        await future

    async def drain(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            await self.db.execute("BEGIN IMMEDIATE")
            await self.db.executemany(INSERT, [row for row, _ in batch])
            await self.db.execute("COMMIT")
            self.batches += 1
            for _, future in batch:
                future.set_result(None)


async def grouped(db: aiosqlite.Connection, n: int, tag: str, width: int = 64) -> dict[str, Any]:
    lat: list[float] = []
    group = Grouped(db)
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            t = time.perf_counter()
            await group.write((tag, str(i), ROW))
            lat.append((time.perf_counter() - t) * 1000)

    await asyncio.gather(*(worker() for _ in range(width)))
    return {"lat": lat, "batches": group.batches}


async def main(path: str, n: int, n_concurrent: int) -> dict[str, Any]:
    db = await connect(path)
    out: dict[str, Any] = {}
    try:
        await sequential(db, 20, "warmup")
        for name, run in (
            ("seq", lambda tag: sequential(db, n, tag)),
            ("c64", lambda tag: concurrent(db, n_concurrent, tag)),
            ("c64_grouped", lambda tag: grouped(db, n_concurrent, tag)),
        ):
            t0 = time.perf_counter()
            got = await run(f"{name}-{time.time_ns()}")
            wall = time.perf_counter() - t0
            lat = got["lat"] if isinstance(got, dict) else got
            out[name] = {"wall": wall, "lat": lat, "writes": len(lat)}
            if isinstance(got, dict):
                out[name]["batches"] = got["batches"]
    finally:
        await db.close()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--concurrent-writes", type=int, default=3000)
    args = parser.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(main(args.db, args.writes, args.concurrent_writes))))
