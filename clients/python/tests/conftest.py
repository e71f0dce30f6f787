"""Fixtures: clients of the real server that `scripts/with_server.sh` started, and of one of
the tests' own (`own_server.py`) for the workflows and limits that server lacks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from own_server import OwnServer
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


# More than gRPC's default 4 MiB, so that answers can be larger than a default client takes.
OWN_SERVER_LIMIT = 16 * 1024 * 1024


@pytest.fixture(scope="session")
def own_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of the tests' own: the control-flow workflows and a 16 MiB message limit."""
    server = OwnServer(
        tmp_path_factory.mktemp("own-server"),
        *("--workflows", "tests.support.flows", "--workflows", "tests.support.workflows"),
        *("--max-message-bytes", str(OWN_SERVER_LIMIT)),
    )
    yield server.address
    server.stop()


@pytest.fixture
def own_client(own_address: str) -> Iterator[WorkflowClient]:
    with WorkflowClient(own_address) as sync_client:
        yield sync_client
