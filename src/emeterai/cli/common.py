"""What every command module shares: consoles, the --data-dir option, the runtime."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from emeterai.config import Settings, load_settings
from emeterai.errors import PdfTooLarge
from emeterai.runtime import Runtime, build_runtime

out = Console()
err = Console(stderr=True)

EXIT_REFUSED = 3
EXIT_AUDIT_FAILED = 1

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: $EMETERAI_DATA_DIR or ./var)."),
]


@contextmanager
def open_runtime(data_dir: Path | None) -> Iterator[Runtime]:
    runtime = build_runtime(load_settings(data_dir))
    try:
        yield runtime
    finally:
        runtime.close()


def read_pdf(path: Path, settings: Settings) -> bytes:
    size = path.stat().st_size
    if size > settings.upload_bytes_max:
        raise PdfTooLarge(f"{path} has {size} bytes; the limit is {settings.upload_bytes_max}")
    return path.read_bytes()


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
