"""Page previews for the web stamp flow, rendered with PDFium (pypdfium2, from PyPI).

A preview is the page exactly as a viewer shows it: the CropBox (clipped to the
MediaBox) after /Rotate, which is the frame `geometry.PageGeometry.visible` uses for
stamp positions. So a point at fraction (fx, fy) of the picture is the point
(fx * width_pt, (1 - fy) * height_pt) of the placement's coordinates, on every page.

PNG is written here with zlib rather than Pillow, so the product needs no imaging
library at run time. PDFium is not thread-safe: one render at a time per process.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass

import pypdfium2  # type: ignore[import-untyped]

from emeterai.errors import NotAPdf, PageOutOfRange, PdfEncrypted, PdfMalformed
from emeterai.pdf.inspect import HEADER_SEARCH_BYTES

__all__ = ["PagePreview", "render_page_preview"]

PREVIEW_WIDTH_PX_MAX = 2000
PREVIEW_PIXELS_MAX = 4_000_000
_LOCK = threading.Lock()


@dataclass(frozen=True)
class PagePreview:
    png: bytes
    width_px: int
    height_px: int
    # The visible page in points (CropBox after /Rotate): the placement's frame.
    width_pt: float
    height_pt: float


def _png(rgb: bytes, width: int, height: int, stride: int) -> bytes:
    raw = bytearray()
    for row in range(height):
        raw.append(0)  # filter: none
        raw += rgb[row * stride : row * stride + width * 3]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 6))
        + chunk(b"IEND", b"")
    )


def render_page_preview(data: bytes, page: int, *, width_px: int = 800) -> PagePreview:
    """Render page `page` (1-based) about `width_px` wide, as PNG."""
    if b"%PDF-" not in data[:HEADER_SEARCH_BYTES]:
        raise NotAPdf()
    width_px = max(50, min(width_px, PREVIEW_WIDTH_PX_MAX))
    with _LOCK:
        try:
            document = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as error:
            if "password" in str(error).lower():
                raise PdfEncrypted() from error
            raise PdfMalformed(str(error)) from error
        try:
            if not 1 <= page <= len(document):
                raise PageOutOfRange(
                    f"page {page} does not exist; the document has {len(document)}"
                )
            handle = document[page - 1]
            try:
                width_pt, height_pt = handle.get_size()
                scale = width_px / width_pt
                if width_pt * height_pt * scale * scale > PREVIEW_PIXELS_MAX:
                    scale = (PREVIEW_PIXELS_MAX / (width_pt * height_pt)) ** 0.5
                bitmap = handle.render(scale=scale, rev_byteorder=True, draw_annots=True)
                try:
                    if bitmap.n_channels != 3:
                        raise PdfMalformed("unexpected preview pixel format")
                    png = _png(bytes(bitmap.buffer), bitmap.width, bitmap.height, bitmap.stride)
                    size_px = (bitmap.width, bitmap.height)
                finally:
                    bitmap.close()
            finally:
                handle.close()
        finally:
            document.close()
    return PagePreview(
        png=png,
        width_px=size_px[0],
        height_px=size_px[1],
        width_pt=float(width_pt),
        height_pt=float(height_pt),
    )
