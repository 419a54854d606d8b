"""Uploaded PDFs waiting to be placed and confirmed: files under `DATA_DIR/web-drafts/`.

A draft costs no database row and no quota. It belongs to one account (its id is in the
file name and checked), lives at most `DRAFT_TTL_S`, and goes once the stamp is made.
The draft's id doubles as the stamp's idempotency key, so a double submit charges once.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from emeterai.config import Settings
from emeterai.errors import DraftNotFound

DRAFT_TTL_S = 3600
_DRAFT_ID = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
FILENAME_LENGTH_MAX = 120


@dataclass(frozen=True)
class Draft:
    id: str
    account_id: int
    filename: str
    pages: list[tuple[float, float]]  # visible width, height in points, per page
    document: bytes


def drafts_dir(settings: Settings) -> Path:
    return settings.data_dir / "web-drafts"


def _paths(settings: Settings, account_id: int, draft_id: str) -> tuple[Path, Path]:
    if not _DRAFT_ID.match(draft_id):
        raise DraftNotFound()
    base = drafts_dir(settings) / f"{int(account_id)}-{draft_id}"
    return base.with_suffix(".pdf"), base.with_suffix(".json")


def _sweep(directory: Path) -> None:
    cutoff = time.time() - DRAFT_TTL_S
    for path in directory.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue


def save_draft(
    settings: Settings,
    account_id: int,
    *,
    filename: str,
    document: bytes,
    pages: list[tuple[float, float]],
) -> str:
    directory = drafts_dir(settings)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _sweep(directory)
    draft_id = secrets.token_urlsafe(24)
    pdf_path, meta_path = _paths(settings, account_id, draft_id)
    pdf_path.write_bytes(document)
    os.chmod(pdf_path, 0o600)
    meta_path.write_text(
        json.dumps({"filename": filename[:FILENAME_LENGTH_MAX], "pages": pages}), "utf-8"
    )
    return draft_id


def load_draft(settings: Settings, account_id: int, draft_id: str) -> Draft:
    pdf_path, meta_path = _paths(settings, account_id, draft_id)
    try:
        if pdf_path.stat().st_mtime < time.time() - DRAFT_TTL_S:
            raise DraftNotFound()
        meta = json.loads(meta_path.read_text("utf-8"))
        document = pdf_path.read_bytes()
    except (OSError, ValueError) as error:
        raise DraftNotFound() from error
    return Draft(
        id=draft_id,
        account_id=account_id,
        filename=str(meta["filename"]),
        pages=[(float(w), float(h)) for w, h in meta["pages"]],
        document=document,
    )


def delete_draft(settings: Settings, account_id: int, draft_id: str) -> None:
    pdf_path, meta_path = _paths(settings, account_id, draft_id)
    for path in [pdf_path, meta_path, *pdf_path.parent.glob(f"{pdf_path.stem}.p*.png")]:
        path.unlink(missing_ok=True)


def preview_path(settings: Settings, account_id: int, draft_id: str, page: int) -> Path:
    pdf_path, _meta = _paths(settings, account_id, draft_id)
    return pdf_path.with_name(f"{pdf_path.stem}.p{int(page)}.png")
