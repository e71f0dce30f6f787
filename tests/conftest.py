"""Fixtures: a real grpc.aio server on 127.0.0.1:0 with a real SQLite file, and a stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from waystation.api.v1 import service_pb2_grpc
from waystation.transport import RunningServer, ServerSettings, create_server

TEST_WORKFLOWS = ["waystation.examples", "tests.support.workflows"]
FLOW_WORKFLOWS = [*TEST_WORKFLOWS, "tests.support.flows", "tests.support.flows_extra"]
"""What the control-flow, foreach, lifecycle and watch tests serve."""


def settings_for(db_path: Path, **overrides: object) -> ServerSettings:
    base = ServerSettings(
        listen="127.0.0.1:0", db=f"sqlite:///{db_path}", workflows=list(TEST_WORKFLOWS)
    )
    for name, setting in overrides.items():
        setattr(base, name, setting)
    return base


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "waystation.db"


@asynccontextmanager
async def serving(settings: ServerSettings, **more: Any) -> AsyncIterator[RunningServer]:
    """A server started with `settings` (and `create_server`'s `more`), stopped on exit."""
    running = await create_server(settings, **more)
    try:
        yield running
    finally:
        await running.stop(grace=1.0)


@pytest.fixture
async def server(db_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RunningServer]:
    """Serves the test module's `WORKFLOWS` if it names some, else TEST_WORKFLOWS."""
    workflows = getattr(request.module, "WORKFLOWS", TEST_WORKFLOWS)
    async with serving(settings_for(db_path, workflows=list(workflows))) as running:
        yield running


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> service_pb2_grpc.WorkflowServiceStub:
    return service_pb2_grpc.WorkflowServiceStub(channel)
