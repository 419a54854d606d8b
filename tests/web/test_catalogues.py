"""Every text is in the catalogues, and every Indonesian entry is translated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

WEB = Path(__file__).resolve().parents[2] / "src" / "emeterai" / "web"


def test_catalogues_are_complete_and_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            str(WEB / "babel.cfg"),
            "-k",
            "N_",
            "--no-location",
            "-o",
            str(fresh),
            str(WEB),
        ],
        check=True,
        capture_output=True,
    )
    with fresh.open("rb") as source:
        extracted = {m.id for m in read_po(source) if m.id}
    with (WEB / "locales" / "id" / "LC_MESSAGES" / "messages.po").open("rb") as source:
        indonesian = read_po(source, locale="id")
    known = {m.id for m in indonesian if m.id}
    assert extracted - known == set(), "run pybabel extract/update (docs/web.md)"
    untranslated = [m.id for m in indonesian if m.id and (not m.string or m.fuzzy)]
    assert not untranslated, untranslated
