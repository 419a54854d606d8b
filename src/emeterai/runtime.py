"""Explicit wiring: everything a command or the server needs, built from `Settings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import emeterai.models  # noqa: F401  (every table registered before any mapper is used)
from emeterai.accounts import TokenVerifier
from emeterai.blobs import FileBlobStore
from emeterai.clock import Clock, SystemClock
from emeterai.config import Settings
from emeterai.db import WRITE_LOCK, make_engine, make_sessions
from emeterai.errors import DatabaseNotReady
from emeterai.pki import root_certificate_pem


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: FileBlobStore
    clock: Clock = field(default_factory=SystemClock)
    tokens: TokenVerifier = field(default_factory=TokenVerifier)

    def trust_roots(self) -> list[bytes]:
        return [root_certificate_pem(self.settings.pki_dir)]

    def close(self) -> None:
        self.engine.dispose()


def build_runtime(settings: Settings, *, clock: Clock | None = None) -> Runtime:
    url = make_url(settings.resolved_database_url)
    where = url.render_as_string(hide_password=True)  # never a password in a message
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        # A read-only command must not leave an empty database behind.
        raise DatabaseNotReady(f"no emeterai database at {where}")
    engine = make_engine(settings.resolved_database_url, write_lock=WRITE_LOCK)
    if not inspect(engine).has_table("serials"):
        engine.dispose()
        raise DatabaseNotReady(f"no emeterai schema at {where}")
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_sessions(engine),
        blobs=FileBlobStore(settings.blob_dir),
        clock=clock or SystemClock(),
    )
