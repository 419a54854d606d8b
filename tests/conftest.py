"""Fixtures shared by every test: a real SQLite and a real PostgreSQL, a test PKI, a clock.

Every storage test runs on both databases through the `database_url` fixture. PostgreSQL
comes from EMETERAI_TEST_POSTGRES_URL (scripts/ensure-postgres.sh sets it); each test gets
a database of its own with a unique name, dropped afterwards. With CI=true a missing
PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from emeterai.config import Settings
from emeterai.migrate import upgrade_database
from emeterai.runtime import Runtime, build_runtime

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PASSPHRASE = "correct horse battery staple"
PUBLIC_URL = "https://emeterai.test"


def postgres_admin_url() -> str:
    return os.environ.get("EMETERAI_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _postgres_available(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def create_postgres_database() -> str:
    """A fresh database on the test server; returns its URL."""
    admin_url = postgres_admin_url()
    if not _postgres_available(admin_url):
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required with CI=true and does not answer at {admin_url}")
        pytest.skip(f"no PostgreSQL at {admin_url}")
    name = f"emeterai_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'emeterai.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """PostgreSQL only: for the tests of row locks under real concurrency."""
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@dataclass
class FixedClock:
    """A clock that moves only when told to."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture(scope="session")
def issuer_pki_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One issuer PKI per test session, copied into each test's data directory."""
    from emeterai.pki import create_issuer_pki

    directory = tmp_path_factory.mktemp("pki-template") / "pki"
    create_issuer_pki(directory, PASSPHRASE.encode())
    return directory


def make_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "key_passphrase": PASSPHRASE,
        "public_url": PUBLIC_URL,
        "signing_processes": 1,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, database_url: str, issuer_pki_template: Path) -> Settings:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copytree(issuer_pki_template, data_dir / "pki")
    upgrade_database(database_url)
    return make_settings(data_dir, database_url)


@pytest.fixture
def runtime(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    built = build_runtime(settings, clock=clock)
    try:
        yield built
    finally:
        built.close()
