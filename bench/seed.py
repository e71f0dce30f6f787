"""Filling a store with many suspended runs, quickly, with exactly the rows the server writes.

A template run is made through the real server (StartRun of bench-cycle until SUSPENDED).
Its rows are read back from every table that holds rows by run id (runs, steps, requests,
events; see `waystation.storage.sqlite`) and copied with new run ids (uuid4 text, as the
server makes them, so the keys land all over the B-trees as real traffic's do) and spread
creation times, by executemany in large transactions. Only the copy runs with
synchronous=OFF; the server that later opens the file sets its own PRAGMAS.
"""

from __future__ import annotations

import os
import random
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

TABLES = ("runs", "steps", "requests", "events")


@dataclass
class Template:
    run_id: str
    rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]]
    """Per table: its column names and the template run's rows."""


def read_template(path: str, run_id: str) -> Template:
    with sqlite3.connect(path) as db:
        rows = {}
        for table in TABLES:
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            found = db.execute(f"SELECT * FROM {table} WHERE run_id = ?", (run_id,)).fetchall()
            rows[table] = (columns, found)
    if not rows["runs"][1]:
        raise RuntimeError(f"template run {run_id} is not in {path}")
    return Template(run_id, rows)


def count_suspended(path: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM runs WHERE status = 'suspended'").fetchone()[0])


def copy_runs(path: str, template: Template, count: int, batch: int = 25_000) -> None:
    """Add `count` copies of the template run, each under a new run id."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")  # 1 GB of page cache while copying
        base = template.rows["runs"][1][0]
        columns = template.rows["runs"][0]
        created = columns.index("create_time")
        updated = columns.index("update_time")
        done = 0
        while done < count:
            n = min(batch, count - done)
            ids = [str(uuid.uuid4()) for _ in range(n)]
            db.execute("BEGIN")
            for table in TABLES:
                names, rows = template.rows[table]
                if not rows:
                    continue
                key = names.index("run_id")
                marks = ", ".join("?" for _ in names)
                sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"
                db.executemany(sql, _copies(rows, ids, key, table, created, updated, base))
            db.execute("COMMIT")
            done += n
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    # Copied with synchronous=OFF, the file is gigabytes of dirty pages that the kernel would
    # write back while the server is measured (an fsync stalls behind that: p99s of 300 ms).
    # A store that has lived long is on disk: put this one there before it is measured.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copies(
    rows: list[tuple[Any, ...]],
    ids: list[str],
    key: int,
    table: str,
    created: int,
    updated: int,
    base: tuple[Any, ...],
) -> Any:
    for run_id in ids:
        for row in rows:
            out = list(row)
            out[key] = run_id
            if table == "runs":
                # Spread over the past (a few hours) so time-ordered indexes look lived in.
                out[created] = base[created] - random.random() * 20_000
                out[updated] = out[created]
            yield out


def sample_suspended(path: str, k: int, seed: int = 7) -> list[str]:
    """`k` suspended runs chosen at random over the whole file (not its newest corner)."""
    rng = random.Random(seed)
    with sqlite3.connect(path) as db:
        top = int(db.execute("SELECT max(rowid) FROM runs").fetchone()[0] or 0)
        found: set[str] = set()
        tries = 0
        while len(found) < k and tries < 50:
            tries += 1
            picks = [rng.randint(1, top) for _ in range(4 * k)]
            marks = ", ".join("?" for _ in picks)
            for (run_id,) in db.execute(
                f"SELECT run_id FROM runs WHERE rowid IN ({marks}) AND status = 'suspended'",
                picks,
            ):
                found.add(run_id)
    chosen = sorted(found)
    rng.shuffle(chosen)
    return chosen[:k]
