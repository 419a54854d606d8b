"""Channels' fixtures: a funded shop and a distributor on the `runtime` fixture's database,
and a real server with extra settings (the sandbox, fault points)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from emeterai.accounts import create_account, issue_token
from emeterai.channels import signing
from emeterai.channels.management import CreatedChannel, create_channel, lock_channel
from emeterai.channels.orders import create_order
from emeterai.db import transaction
from emeterai.runtime import Runtime
from tests.api.conftest import Server, free_port
from tests.conftest import PASSPHRASE, PUBLIC_URL, create_postgres_database, drop_postgres_database


@dataclass
class Shop:
    runtime: Runtime
    shop: CreatedChannel
    distributor: CreatedChannel
    buyer_id: int
    buyer_token: str

    def order(self, count: int = 2, *, channel: CreatedChannel | None = None) -> tuple[str, int]:
        with transaction(self.runtime.sessions) as session:
            locked = lock_channel(session, (channel or self.shop).channel.id)
            order = create_order(
                session, locked, self.buyer_id, count, now=self.runtime.clock.now()
            )
            return order.id, order.amount_rupiah


@pytest.fixture
def shop(runtime: Runtime) -> Shop:
    with transaction(runtime.sessions) as session:
        now = runtime.clock.now()
        shop = create_channel(
            session, runtime.settings, "toko", kind="shop", now=now, fee_rupiah=500
        )
        distributor = create_channel(
            session,
            runtime.settings,
            "pos-indonesia",
            kind="distributor",
            now=now,
            fee_rupiah=1000,
            credit_limit=3,
        )
        buyer = create_account(session, "pelamar@example.id", now=now)
        token = issue_token(session, buyer, now=now).token
    return Shop(
        runtime=runtime, shop=shop, distributor=distributor, buyer_id=buyer.id, buyer_token=token
    )


def signed(
    secret: str, payload: dict[str, object], timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = int(time.time()) if timestamp is None else timestamp
    return body, {
        "X-Emeterai-Timestamp": str(stamp),
        "X-Emeterai-Signature": signing.sign(secret, stamp, body),
        "Content-Type": "application/json",
    }


def server_env(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMETERAI_")}
    env.update(
        EMETERAI_DATA_DIR=str(data_dir),
        EMETERAI_DATABASE_URL=database_url,
        EMETERAI_KEY_PASSPHRASE=PASSPHRASE,
        EMETERAI_PUBLIC_URL=PUBLIC_URL,
        EMETERAI_SIGNING_PROCESSES="1",
        **extra,
    )
    return env


@dataclass
class Running:
    server: Server
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch(data_dir: Path, database_url: str, *, workers: int = 1, **extra: str) -> Running:
    """`emeterai serve` with extra EMETERAI_* settings; the caller stops it."""
    env = server_env(data_dir, database_url, **extra)
    port = free_port()
    server = Server(base_url=f"http://127.0.0.1:{port}", env=env, data_dir=data_dir)
    if not (data_dir / "pki").exists():
        initialised = server.cli("init")
        assert initialised.returncode == 0, initialised.stderr
    log = (data_dir / f"server-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "emeterai", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((data_dir / f"server-{port}.log").read_text())
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return Running(server=server, process=process)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not become ready")


@pytest.fixture(params=["sqlite", "postgresql"])
def server_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    if request.param == "sqlite":
        yield data_dir, f"sqlite:///{data_dir / 'emeterai.db'}"
        return
    url = create_postgres_database()
    try:
        yield data_dir, url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sandbox_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One real server per module and database, sandbox on, two worker processes."""
    data_dir = tmp_path_factory.mktemp("channels") / "var"
    data_dir.mkdir()
    url = (
        f"sqlite:///{data_dir / 'emeterai.db'}"
        if request.param == "sqlite"
        else create_postgres_database()
    )
    running = launch(data_dir, url, workers=2, EMETERAI_PAYMENTS_SANDBOX="1")
    try:
        yield running.server
    finally:
        running.stop()
        if request.param != "sqlite":
            drop_postgres_database(url)
