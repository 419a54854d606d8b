"""The stamp's appearance: our own design, a pink 100 x 100 pt square.

Pure content-stream bytes (no PDF library), drawn upright in a 0..100 box; `sign` puts
it in a form XObject whose /Matrix turns it to suit the page's /Rotate.
Nothing here is copied from Peruri's artwork or uses the state emblem.
"""

from __future__ import annotations

import segno

from emeterai.pdf.geometry import STAMP_SIZE_PT

TITLE = "METERAI ELEKTRONIK"
FACE_VALUE = "10000"
FACE_VALUE_WORDS = "SEPULUH RIBU RUPIAH"
MARKER_KEY = "/EmeteraiSerial"
# Fixed mask: segno otherwise tries all eight (several ms); any mask decodes as well.
QR_MASK = 3
QR_ERROR = "m"

# Resource names used by the content stream; `sign` supplies the standard-14 fonts.
FONT_BOLD = "/EmBold"
FONT_MONO = "/EmMono"
FONT_BASE_NAMES = {FONT_BOLD: "/Helvetica-Bold", FONT_MONO: "/Courier-Bold"}

# Pink palette (RGB 0..1).
_BACKGROUND = (1.0, 0.878, 0.925)
_INK = (0.784, 0.086, 0.424)
_DEEP = (0.471, 0.027, 0.239)

# Helvetica-Bold advance widths (AFM, per 1000 em) for the characters we draw.
_HELVETICA_BOLD_WIDTHS = {
    **dict.fromkeys("ABCDHKNRUZ", 722),
    **dict.fromkeys("EPSVXY", 667),
    **dict.fromkeys("FLTZ", 611),
    **dict.fromkeys("GOQ", 778),
    "I": 278,
    "J": 556,
    "M": 833,
    "W": 944,
    " ": 278,
    ".": 278,
    **dict.fromkeys("0123456789", 556),
}
_COURIER_WIDTH = 600


def _text_width_pt(text: str, size_pt: float, *, mono: bool) -> float:
    if mono:
        return len(text) * _COURIER_WIDTH * size_pt / 1000
    return sum(_HELVETICA_BOLD_WIDTHS.get(ch, 667) for ch in text) * size_pt / 1000


def _escape(text: str) -> bytes:
    raw = text.encode("latin-1", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _centred_text(text: str, font: str, size_pt: float, baseline_pt: float) -> bytes:
    width = _text_width_pt(text, size_pt, mono=font == FONT_MONO)
    x = (STAMP_SIZE_PT - width) / 2
    return b"BT %s %.2f Tf %.2f %.2f Td (%s) Tj ET" % (
        font.encode(),
        size_pt,
        x,
        baseline_pt,
        _escape(text),
    )


def _rgb(colour: tuple[float, float, float], op: bytes) -> bytes:
    return b"%.3f %.3f %.3f %s" % (*colour, op)


def qr_modules(verify_url: str) -> tuple[tuple[bool, ...], ...]:
    qr = segno.make_qr(verify_url, error=QR_ERROR, mask=QR_MASK, boost_error=False)
    return tuple(tuple(bool(cell) for cell in row) for row in qr.matrix)


def _qr_paths(modules: tuple[tuple[bool, ...], ...], x0: float, y0: float, size: float) -> bytes:
    count = len(modules)
    cell = size / count
    rects: list[bytes] = []
    for row_index, row in enumerate(modules):
        y = y0 + size - (row_index + 1) * cell
        column = 0
        while column < count:
            if not row[column]:
                column += 1
                continue
            start = column
            while column < count and row[column]:
                column += 1
            # Runs of dark modules become one rectangle: fewer operators, no seams.
            rects.append(
                b"%.3f %.3f %.3f %.3f re" % (x0 + start * cell, y, (column - start) * cell, cell)
            )
    return b"\n".join(rects) + b"\nf"


def appearance_content(serial: str, verify_url: str) -> bytes:
    """The content stream of the stamp, upright, in the box [0 0 100 100]."""
    size = STAMP_SIZE_PT
    modules = qr_modules(verify_url)
    qr_size = 52.0
    quiet = 3.0  # white margin around the code (about two modules)
    qr_x = (size - qr_size) / 2
    qr_y = 32.0
    parts = [
        b"q",
        _rgb(_BACKGROUND, b"rg"),
        b"0 0 %.2f %.2f re f" % (size, size),
        # a double frame in the ink colour: the outer line marks the stamp's extent
        _rgb(_INK, b"RG"),
        b"2 w 1 1 %.2f %.2f re S" % (size - 2, size - 2),
        b"0.6 w 4 4 %.2f %.2f re S" % (size - 8, size - 8),
        # diagonal hatching in the two lower corners, our own ornament
        b"0.4 w",
        *[
            b"%.2f 4 m 4 %.2f l S %.2f 4 m 96 %.2f l S" % (d, d, size - d, d)
            for d in (9.0, 12.0, 15.0)
        ],
        b"1 1 1 rg",
        b"%.2f %.2f %.2f %.2f re f"
        % (qr_x - quiet, qr_y - quiet, qr_size + 2 * quiet, qr_size + 2 * quiet),
        b"0 0 0 rg",
        _qr_paths(modules, qr_x, qr_y, qr_size),
        _rgb(_DEEP, b"rg"),
        _centred_text(TITLE, FONT_BOLD, 7.2, 89.5),
        _rgb(_INK, b"rg"),
        _centred_text(FACE_VALUE, FONT_BOLD, 10.0, 19.5),
        _rgb(_DEEP, b"rg"),
        _centred_text(FACE_VALUE_WORDS, FONT_BOLD, 5.6, 13.0),
        _centred_text(serial, FONT_MONO, 5.0, 7.0),
        b"Q",
    ]
    return b"\n".join(parts)
