"""What every command module shares: consoles, the --data-dir option, the runtime."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from emeterai.config import Settings, load_settings
from emeterai.errors import OutputNotWritable, PdfTooLarge
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


@contextmanager
def output_file(path: Path) -> Iterator[Callable[[bytes], None]]:
    """Open the output's temporary file first, so a path that cannot be written is
    refused before anything is charged; the caller writes once, then it is renamed."""
    if path.is_dir():
        raise OutputNotWritable(f"{path} is a directory; name the output file")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        handle = temporary.open("xb")
    except OSError as error:
        raise OutputNotWritable(f"cannot write {path}: {error.strerror}") from error
    written = False

    def write(data: bytes) -> None:
        nonlocal written
        try:
            handle.write(data)
            handle.close()
            os.replace(temporary, path)
        except OSError as error:
            raise OutputNotWritable(
                f"the stamp was made but {path} could not be written ({error.strerror});"
                " run the same command again to get it without a second charge"
            ) from error
        written = True

    try:
        yield write
    finally:
        handle.close()
        if not written:
            temporary.unlink(missing_ok=True)
