"""`python -m waystation.healthcheck`, the Docker image's HEALTHCHECK, as a process against
real servers: plain text, TLS and mutual TLS, with the `WAYSTATION_*` variables the
`waystation` client commands read. It exits 0 when the server answers SERVING; every
failure exits 1 with one line on stderr saying why."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import serving, settings_for
from tests.support.certificates import Authority
from waystation.transport import RunningServer, ServerSettings

# Only the variables each test sets.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("WAYSTATION_")}


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


async def healthcheck(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """Run the health check as a process; the server keeps serving on this event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "waystation.healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV | (env or {}),
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return Outcome(process.returncode, stdout.decode(), stderr.decode())


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: tuple[Path, Path]
    """A certificate for waystation.internal and 127.0.0.1 (not for localhost), its key."""
    client: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("health-pki")
    ca = Authority.new("healthcheck test CA")
    server = ca.issue("waystation", dns=["waystation.internal"], ips=["127.0.0.1"], server=True)
    return Pki(
        ca.write(folder / "ca.crt"),
        server.write(folder / "server"),
        ca.issue("prober").write(folder / "client"),
    )


def tls_settings(db_path: Path, pki: Pki, *, mutual: bool) -> ServerSettings:
    cert, key = pki.server
    client_ca = str(pki.ca) if mutual else ""
    return settings_for(db_path, tls_cert=str(cert), tls_key=str(key), tls_client_ca=client_ca)


@pytest.fixture
async def tls_server(db_path: Path, pki: Pki) -> AsyncIterator[RunningServer]:
    async with serving(tls_settings(db_path, pki, mutual=False)) as running:
        yield running


@pytest.fixture
async def mtls_server(db_path: Path, pki: Pki) -> AsyncIterator[RunningServer]:
    async with serving(tls_settings(db_path, pki, mutual=True)) as running:
        yield running


async def test_a_tls_server_is_healthy_with_the_ca_the_environment_names(
    tls_server: RunningServer, pki: Pki
) -> None:
    address = f"127.0.0.1:{tls_server.port}"
    healthy = await healthcheck(address, env={"WAYSTATION_TLS_CA": str(pki.ca)})
    assert (healthy.code, healthy.stdout, healthy.stderr) == (0, "", "")
    plain = await healthcheck(address)
    assert plain.code == 1
    [line] = plain.stderr.splitlines()
    assert line.startswith(f"healthcheck: {address} is unreachable: UNAVAILABLE: "), line


async def test_the_server_name_option_checks_the_certificate_for_that_name(
    tls_server: RunningServer, pki: Pki
) -> None:
    """The address names localhost, which the certificate does not: the check fails
    unless the name to check is given, as a container checking itself on 127.0.0.1 must."""
    address = f"localhost:{tls_server.port}"
    wrong_name = await healthcheck("--tls-ca", str(pki.ca), address)
    assert wrong_name.code == 1, wrong_name.stderr
    named = await healthcheck(
        "--tls-ca", str(pki.ca), "--tls-server-name", "waystation.internal", address
    )
    assert named.code == 0, named.stderr


async def test_a_mutual_tls_server_is_healthy_with_the_client_certificate_variables(
    mtls_server: RunningServer, pki: Pki
) -> None:
    address = f"127.0.0.1:{mtls_server.port}"
    without = await healthcheck(address, env={"WAYSTATION_TLS_CA": str(pki.ca)})
    assert without.code == 1
    assert "is unreachable" in without.stderr
    cert, key = pki.client
    env = {
        "WAYSTATION_TLS_CA": str(pki.ca),
        "WAYSTATION_TLS_CLIENT_CERT": str(cert),
        "WAYSTATION_TLS_CLIENT_KEY": str(key),
    }
    healthy = await healthcheck(address, env=env)
    assert healthy.code == 0, healthy.stderr


async def test_a_server_that_is_not_serving_exits_1_saying_so(server: RunningServer) -> None:
    address = f"127.0.0.1:{server.port}"
    assert (await healthcheck(address)).code == 0
    await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    outcome = await healthcheck(address)
    assert outcome.code == 1
    assert outcome.stderr == f"healthcheck: {address} is not serving (NOT_SERVING)\n"


async def test_help_exits_0_and_a_bad_invocation_exits_1_saying_why(tmp_path: Path) -> None:
    shown = await healthcheck("--help")
    assert shown.code == 0, shown.stderr
    assert shown.stdout.startswith("usage: python -m waystation.healthcheck")
    assert "WAYSTATION_TLS_CA" in shown.stdout
    for args, why in [
        (["--bogus"], "healthcheck: unrecognized arguments: --bogus"),
        (["--tls-cert", "client.crt"], "healthcheck: --tls-cert / --tls-key: a client certificate"),
        (["--tls-ca", str(tmp_path / "none.crt")], "healthcheck: cannot read "),
    ]:
        outcome = await healthcheck(*args)
        assert outcome.code == 1, args
        assert len(outcome.stderr.splitlines()) == 1, outcome.stderr
        assert outcome.stderr.startswith(why), outcome.stderr
