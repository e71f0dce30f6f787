"""Ids: the checks every id a request names must pass, and the run ids the server makes up:
UUIDv7 (RFC 9562), time-ordered.

A run id leads the key of every row a transition writes (the run's row, its steps, its
events). Random ids (UUIDv4) scatter the runs in flight across the whole of each B-tree,
so concurrent commits dirty leaves far apart and split full ones in the middle; ids that
begin with the time keep the runs in flight at the end of each tree, where a batch of
commits shares a few pages. They are still UUIDs, unique without coordination (74 random
bits within a millisecond), and they sort by when the run was made; so an id tells when
its run was made, to the millisecond (as the run's create_time does to whoever may read
it). A caller who must not reveal that passes run ids of its own.
"""

from __future__ import annotations

import os
import re
import time

from waystation.engine.errors import InvalidArgument

MAX_ID = 200
RUN_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_B = (1 << 62) - 1


def new_run_id() -> str:
    """A UUIDv7 in its canonical form: 48 bits of Unix time in milliseconds, the version,
    12 random bits, the variant and 62 more random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | _VERSION | ((rand >> 68) << 64) | _VARIANT | (rand & _RAND_B)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_RUN_ID_RULE = "must be 1-200 characters of A-Z a-z 0-9 . _ : -"


def check_run_id(run_id: str) -> None:
    """A run id that cannot exist is refused with a short message (never echoed whole):
    every run id, made up by the server or chosen by a caller, has always had to match
    `RUN_ID`, so one that does not is malformed, not missing."""
    if not run_id:
        raise InvalidArgument("run_id", "required")
    if len(run_id) > MAX_ID:
        raise InvalidArgument("run_id", f"longer than {MAX_ID} characters")
    if not RUN_ID.fullmatch(run_id):
        raise InvalidArgument("run_id", _RUN_ID_RULE)


def check_new_run_id(requested: str) -> None:
    """The id a caller asks for a new run, if it asks for one (else the server makes one)."""
    if requested and not RUN_ID.fullmatch(requested):
        raise InvalidArgument("run_id", _RUN_ID_RULE)


def check_workflow_id(workflow_id: str) -> None:
    if not workflow_id:
        raise InvalidArgument("workflow_id", "required")
    if len(workflow_id) > MAX_ID:
        raise InvalidArgument("workflow_id", f"longer than {MAX_ID} characters")
