"""Fixtures: clients of the real server that `scripts/with_server.sh` started."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from waystation_client import AsyncWorkflowClient, WorkflowClient


@pytest.fixture
def address() -> str:
    """The server's address; the e2e tests fail (not skip) without one."""
    found = os.environ.get("WAYSTATION_ADDRESS")
    if not found:
        pytest.fail("WAYSTATION_ADDRESS is not set: run the tests under scripts/with_server.sh")
    return found


@pytest.fixture
async def aclient(address: str) -> AsyncIterator[AsyncWorkflowClient]:
    async with AsyncWorkflowClient(address) as client:
        yield client


@pytest.fixture
def client(address: str) -> Iterator[WorkflowClient]:
    with WorkflowClient(address) as sync_client:
        yield sync_client
