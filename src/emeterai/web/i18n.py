"""Translations: Bahasa Indonesia first, English by switch.

The catalogues are Babel `.po` files under `locales/`. They are compiled in memory the
first time a language is used, so a fresh checkout needs no build step and no `.mo`
files in git. Message ids are English; `en` falls back to them.
"""

from __future__ import annotations

import gettext
import io
from datetime import datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "N_", "catalogue", "format_rupiah", "format_time"]

LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"
LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
# Times are shown as most users live them: Western Indonesian Time.
DISPLAY_ZONE = ZoneInfo("Asia/Jakarta")


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated where it is shown."""
    return message


@cache
def catalogue(language: str) -> gettext.NullTranslations:
    if language not in LANGUAGES:
        language = DEFAULT_LANGUAGE
    path = LOCALES_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as source:
        compiled = read_po(source, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, compiled, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def format_rupiah(amount: int, language: str) -> str:
    return "Rp" + format_decimal(amount, locale="id_ID" if language == "id" else "en_US")


def format_number(value: int, language: str) -> str:
    return format_decimal(value, locale="id_ID" if language == "id" else "en_US")


def format_time(moment: datetime | None, language: str) -> str:
    if moment is None:
        return ""
    local = moment.astimezone(DISPLAY_ZONE)
    text = format_datetime(
        local,
        "d MMM y, HH.mm" if language == "id" else "d MMM y, HH:mm",
        locale="id_ID" if language == "id" else "en_GB",
    )
    return f"{text} WIB"
