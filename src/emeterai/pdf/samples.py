"""Sample documents for benchmarks and demos: a one-page A4 letter and a scanned page.

They live in the product (not in tests/) because `emeterai bench` ships with it.
"""

from __future__ import annotations

import io
import random
import zlib

import pikepdf

A4_PT = (595.28, 841.89)
LETTER_LINES = (
    "Kepada Yth. Panitia Seleksi CASN 2024",
    "Perihal: Surat Pernyataan",
    "",
    "Yang bertanda tangan di bawah ini menyatakan dengan sesungguhnya bahwa",
    "seluruh data yang saya sampaikan adalah benar dan dapat dipertanggungjawabkan.",
    "",
    "Jakarta, 5 September 2024",
)


def _save(pdf: pikepdf.Pdf) -> bytes:
    buffer = io.BytesIO()
    pdf.save(buffer, deterministic_id=True)
    return buffer.getvalue()


def letter_a4() -> bytes:
    """A one-page A4 text letter, as an applicant would upload."""
    pdf = pikepdf.new()
    pdf.docinfo["/Title"] = "Surat Pernyataan"
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    lines = [b"BT /F1 11 Tf 72 760 Td 16 TL"]
    for line in LETTER_LINES:
        lines.append(b"(" + line.encode("latin-1") + b") Tj T*")
    lines.append(b"ET")
    page = pdf.add_blank_page(page_size=A4_PT)
    page.add_resource(font, pikepdf.Name.Font, pikepdf.Name("/F1"))
    page.contents_add(pdf.make_stream(b"\n".join(lines)))
    return _save(pdf)


def scanned_page(target_bytes: int = 800_000, *, seed: int = 2024) -> bytes:
    """One A4 page holding a grey 'scan' of about `target_bytes` (noise does not compress)."""
    width = 1240
    height = max(1, target_bytes // width)
    noise = random.Random(seed).randbytes(width * height)  # noqa: S311 (sample data, not a secret)
    pdf = pikepdf.new()
    image = pikepdf.Stream(pdf, zlib.compress(noise, 1))
    image.Type = pikepdf.Name.XObject
    image.Subtype = pikepdf.Name.Image
    image.Width = width
    image.Height = height
    image.ColorSpace = pikepdf.Name.DeviceGray
    image.BitsPerComponent = 8
    image.Filter = pikepdf.Name.FlateDecode
    page = pdf.add_blank_page(page_size=A4_PT)
    page.add_resource(image, pikepdf.Name.XObject, pikepdf.Name("/Scan"))
    page.contents_add(pdf.make_stream(b"q 595.28 0 0 841.89 0 0 cm /Scan Do Q"))
    return _save(pdf)
