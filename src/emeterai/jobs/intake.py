"""What a batch is made of: several files or a ZIP, each with its own position or a shared one.

Everything is bounded before a byte is stored: the number of documents, each document's
size and the batch's total. A ZIP is read entry by entry with the same bounds, so an
archive that inflates past them is refused before it fills memory.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from emeterai.errors import (
    BatchEmpty,
    BatchTooLarge,
    InvalidArchive,
    InvalidPositions,
    PdfTooLarge,
)

ZIP_MAGIC = b"PK\x03\x04"
NAME_LENGTH_MAX = 200
COORDINATE_MAX_PT = 14_400.0  # PDF's largest page side
PAGE_MAX = 100_000
POSITIONS_JSON_BYTES_MAX = 1024 * 1024


@dataclass(frozen=True)
class Position:
    page: int = 1
    # None for both: the bottom-right corner of the page (see stamping.placement_for).
    x_pt: float | None = None
    y_pt: float | None = None


@dataclass(frozen=True)
class BulkDocument:
    name: str
    data: bytes
    position: Position = Position()


@dataclass(frozen=True)
class Bounds:
    documents_max: int
    bytes_max: int
    document_bytes_max: int


def check_position(position: Position) -> Position:
    if isinstance(position.page, bool) or not 1 <= position.page <= PAGE_MAX:
        raise InvalidPositions(f"a page is a number from 1 to {PAGE_MAX}")
    if (position.x_pt is None) != (position.y_pt is None):
        raise InvalidPositions("give both x and y, or neither (bottom-right corner)")
    for value in (position.x_pt, position.y_pt):
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= COORDINATE_MAX_PT):
            raise InvalidPositions(
                f"a coordinate is a number of points from 0 to {COORDINATE_MAX_PT}"
            )
    return position


def clean_name(name: str, index: int) -> str:
    """A file name safe to show and to put back in a ZIP: no directories, printable."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = "".join(c for c in base if c.isprintable() and c not in '<>:"|?*')[-NAME_LENGTH_MAX:]
    return base or f"document-{index}.pdf"


def _is_junk(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return not parts or parts[0] == "__MACOSX" or parts[-1].startswith(".")


def _unzip(data: bytes, bounds: Bounds, budget: list[int]) -> list[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise InvalidArchive(f"the ZIP cannot be read: {error}") from error
    found: list[tuple[str, bytes]] = []
    with archive:
        for entry in entries:
            if entry.is_dir() or _is_junk(entry.filename):
                continue
            if entry.flag_bits & 0x1:
                raise InvalidArchive(f"{entry.filename[:100]} is encrypted")
            if len(found) + budget[0] >= bounds.documents_max:
                raise BatchTooLarge(f"a batch holds at most {bounds.documents_max} documents")
            limit = min(bounds.document_bytes_max, bounds.bytes_max - budget[1])
            try:
                with archive.open(entry) as handle:
                    content = handle.read(limit + 1)
            except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError) as error:
                raise InvalidArchive(f"{entry.filename[:100]} cannot be read: {error}") from error
            _check_size(entry.filename, len(content), bounds, budget[1])
            budget[1] += len(content)
            found.append((entry.filename, content))
    return found


def _check_size(name: str, size: int, bounds: Bounds, used: int) -> None:
    if size > bounds.document_bytes_max:
        raise PdfTooLarge(
            f"{name[:100]} has more than {bounds.document_bytes_max} bytes, the limit"
            " for one document"
        )
    if used + size > bounds.bytes_max:
        raise BatchTooLarge(f"the batch holds more than {bounds.bytes_max} bytes, the limit")


def expand_uploads(files: Sequence[tuple[str, bytes]], bounds: Bounds) -> list[tuple[str, bytes]]:
    """PDFs as they are; each ZIP replaced by the files it holds (one level, in order)."""
    budget = [0, 0]  # documents, bytes
    documents: list[tuple[str, bytes]] = []
    for name, data in files:
        if data.startswith(ZIP_MAGIC):
            for inner in _unzip(data, bounds, budget):
                documents.append(inner)
                budget[0] += 1
            continue
        if budget[0] >= bounds.documents_max:
            raise BatchTooLarge(f"a batch holds at most {bounds.documents_max} documents")
        _check_size(name, len(data), bounds, budget[1])
        budget[1] += len(data)
        budget[0] += 1
        documents.append((name, data))
    if not documents:
        raise BatchEmpty("send at least one PDF, or a ZIP of PDFs")
    return documents


def parse_positions(text: str | None, names: Sequence[str]) -> list[Position | None]:
    """Per-document positions from JSON: a list in document order, or an object by name.

    Each value is {"page": 1, "x": 400, "y": 60} (x and y optional). A document the JSON
    does not mention gets the shared position.
    """
    if text is None or not text.strip():
        return [None] * len(names)
    if len(text) > POSITIONS_JSON_BYTES_MAX:
        raise InvalidPositions("the positions are too long")
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise InvalidPositions(f"the positions are not JSON: {error}") from error
    if isinstance(raw, list):
        if len(raw) != len(names):
            raise InvalidPositions(f"{len(raw)} positions for {len(names)} documents")
        return [_position(value) for value in raw]
    if isinstance(raw, dict):
        unknown = set(raw) - set(names)
        if unknown:
            raise InvalidPositions(f"no document is named {sorted(unknown)[0][:100]!r}")
        return [_position(raw[name]) if name in raw else None for name in names]
    raise InvalidPositions("the positions are a JSON list or object")


def _position(value: object) -> Position:
    if not isinstance(value, dict) or set(value) - {"page", "x", "y"}:
        raise InvalidPositions('each position is {"page": N, "x": points, "y": points}')
    page, x, y = value.get("page", 1), value.get("x"), value.get("y")
    if not isinstance(page, int) or isinstance(page, bool):
        raise InvalidPositions("a page is a whole number")
    for coordinate in (x, y):
        if coordinate is not None and (
            isinstance(coordinate, bool) or not isinstance(coordinate, int | float)
        ):
            raise InvalidPositions("a coordinate is a number of points")
    return check_position(
        Position(
            page=page,
            x_pt=None if x is None else float(x),
            y_pt=None if y is None else float(y),
        )
    )


def bulk_documents(
    files: Sequence[tuple[str, bytes]],
    *,
    bounds: Bounds,
    shared: Position,
    positions_json: str | None = None,
) -> list[BulkDocument]:
    """The batch as the user meant it: files expanded, names cleaned, positions given."""
    check_position(shared)
    expanded = expand_uploads(files, bounds)
    names = [clean_name(name, index) for index, (name, _) in enumerate(expanded, start=1)]
    positions = parse_positions(positions_json, names)
    return [
        BulkDocument(name=name, data=data, position=position or shared)
        for name, (_, data), position in zip(names, expanded, positions, strict=True)
    ]
