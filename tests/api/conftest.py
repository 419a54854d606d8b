"""A real `emeterai serve` in its own processes, on loopback, per database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    PASSPHRASE,
    PUBLIC_URL,
    create_postgres_database,
    drop_postgres_database,
)

UPLOAD_BYTES_MAX = 2_000_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    data_dir: Path

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "emeterai", *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def user(self, email: str, quota: int) -> str:
        created = self.cli("account", "create", email)
        assert created.returncode == 0, created.stderr
        if quota:
            added = self.cli("quota", "add", email, str(quota), "--reference", f"grant-{email}")
            assert added.returncode == 0, added.stderr
        return created.stdout.strip()


def start_server(
    data_dir: Path,
    database_url: str,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    serve_options: tuple[str, ...] = (),
) -> Iterator[Server]:
    """A real `emeterai serve`. The core's tests switch the waiting room off: they test
    the ledger and the documents; tests/admission tests the waiting room itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMETERAI_")}
    env.update(
        EMETERAI_DATA_DIR=str(data_dir),
        EMETERAI_DATABASE_URL=database_url,
        EMETERAI_KEY_PASSPHRASE=PASSPHRASE,
        EMETERAI_PUBLIC_URL=PUBLIC_URL,
        EMETERAI_SIGNING_PROCESSES="1",
        EMETERAI_UPLOAD_BYTES_MAX=str(UPLOAD_BYTES_MAX),
        EMETERAI_ADMISSION_ENABLED="false",
    )
    env.update(extra_env or {})
    port = free_port()
    server = Server(base_url=f"http://127.0.0.1:{port}", env=env, data_dir=data_dir)
    initialised = server.cli("init")
    assert initialised.returncode == 0, initialised.stderr
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emeterai",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *serve_options,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((data_dir / "server.log").read_text())
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the server did not become ready")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("server") / "var"
    if request.param == "sqlite":
        yield from start_server(data_dir, f"sqlite:///{data_dir / 'emeterai.db'}")
        return
    url = create_postgres_database()
    try:
        yield from start_server(data_dir, url)
    finally:
        drop_postgres_database(url)
