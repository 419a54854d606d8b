"""Sample PDFs for stamping tests, generated in code.

Every function returns the bytes of one file. The files are built with pikepdf (and Pillow
for pictures), so no binary fixture lives in the repository and each sample says in code
what it is. Output is deterministic: the same call gives the same bytes, run after run,
except ``encrypted()``, whose AES salts are random (the bytes are cached, so they are
stable within one test process).

Builders are cached because bytes are immutable and several tests use the same sample.

Sizes are in PDF points (1/72 inch). Page numbers are 1-based, like pdftoppm's.
"""

from __future__ import annotations

import functools
import io
import math
import random
import re
from collections.abc import Sequence

import pikepdf
import segno
from pikepdf import Array, Dictionary, Name, ObjectStreamMode, Pdf, String
from PIL import Image, ImageDraw

A4_PT = (595.28, 841.89)
LETTER_PT = (612.0, 792.0)

# Fixed, so that the output is reproducible and looks like a real export.
CREATION_DATE = "D:20240902090000+07'00'"
USER_PASSWORD = "rahasia"
OWNER_PASSWORD = "pemilik-dokumen"

PAGES_MAX = 2000
SCANNED_BYTES_MIN = 20_000
SCANNED_BYTES_MAX = 50_000_000

_VERSIONS = ("1.3", "1.4", "1.5", "1.6", "1.7", "2.0")

_LETTER_LINES = (
    "Yang bertanda tangan di bawah ini:",
    "",
    "Nama              : Budi Santoso",
    "Tempat/Tgl. Lahir : Bandung, 17 Agustus 1998",
    "Alamat            : Jl. Merdeka No. 10, Jakarta Pusat 10110",
    "",
    "Dengan ini menyatakan dengan sesungguhnya bahwa seluruh data dan dokumen yang",
    "saya sampaikan dalam pendaftaran Seleksi Calon Aparatur Sipil Negara (CASN)",
    "Tahun Anggaran 2024 adalah benar dan dapat dipertanggungjawabkan. Apabila di",
    "kemudian hari terbukti tidak benar, saya bersedia menerima sanksi sesuai",
    "dengan ketentuan peraturan perundang-undangan yang berlaku.",
    "",
    "Demikian surat pernyataan ini saya buat dengan sebenarnya, dalam keadaan sehat",
    "jasmani dan rohani, serta tanpa paksaan dari pihak mana pun.",
)


# ---------------------------------------------------------------------------------------
# Building blocks


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi (Latin-1 covers what we write)."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def _new_pdf(title: str) -> Pdf:
    pdf = Pdf.new()
    pdf.trailer.Info = pdf.make_indirect(
        Dictionary(
            Title=String(title),
            Author=String("Budi Santoso"),
            Creator=String("emeterai test corpus"),
            Producer=String("pikepdf"),
            CreationDate=String(CREATION_DATE),
        )
    )
    return pdf


def _helvetica(pdf: Pdf) -> pikepdf.Object:
    return pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type1,
            BaseFont=Name.Helvetica,
            Encoding=Name.WinAnsiEncoding,
        )
    )


def _letter_content(box: Sequence[float], page_number: int, page_count: int) -> bytes:
    """A content stream with the letter text laid out inside ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    left = x0 + 72
    top = y1 - 80
    parts = [
        b"BT",
        b"/F1 14 Tf",
        f"{left:.2f} {top:.2f} Td".encode(),
        _pdf_string("SURAT PERNYATAAN") + b" Tj",
        b"/F1 10.5 Tf 15 TL",
        b"0 -30 Td",
    ]
    for line in _LETTER_LINES:
        parts.append(_pdf_string(line) + b" '")
    parts.append(b"ET")
    # Signature block at the bottom right, where users usually put the stamp.
    sign_x = x1 - 72 - 170
    parts += [
        b"BT /F1 10.5 Tf 15 TL",
        f"{sign_x:.2f} {y0 + 260:.2f} Td".encode(),
        _pdf_string("Jakarta, 2 September 2024") + b" Tj",
        _pdf_string("Yang membuat pernyataan,") + b" '",
        b"0 -110 Td",
        _pdf_string("Budi Santoso") + b" Tj",
        b"ET",
        # A rule under the name, and the page footer.
        f"0.5 w {sign_x:.2f} {y0 + 120:.2f} m {sign_x + 150:.2f} {y0 + 120:.2f} l S".encode(),
        b"BT /F1 8 Tf",
        f"{(x0 + x1) / 2 - 30:.2f} {y0 + 30:.2f} Td".encode(),
        _pdf_string(f"Halaman {page_number} dari {page_count}") + b" Tj",
        b"ET",
    ]
    return b"\n".join(parts) + b"\n"


def _add_letter_page(
    pdf: Pdf,
    font: pikepdf.Object,
    media_box: Sequence[float],
    *,
    page_number: int = 1,
    page_count: int = 1,
    crop_box: Sequence[float] | None = None,
    rotate: int = 0,
) -> pikepdf.Page:
    text_box = crop_box if crop_box is not None else media_box
    page = Dictionary(
        Type=Name.Page,
        MediaBox=Array(media_box),
        Resources=Dictionary(Font=Dictionary(F1=font)),
        Contents=pdf.make_stream(_letter_content(text_box, page_number, page_count)),
    )
    if crop_box is not None:
        page.CropBox = Array(crop_box)
    if rotate:
        page.Rotate = rotate
    pdf.pages.append(pikepdf.Page(page))
    return pdf.pages[-1]


def _save(pdf: Pdf, *, version: str = "1.7", object_streams: bool = False) -> bytes:
    if version not in _VERSIONS:
        raise ValueError(f"unsupported PDF version {version!r}; expected one of {_VERSIONS}")
    if object_streams and version < "1.5":
        raise ValueError(f"object streams need PDF 1.5 or newer, not {version}")
    buffer = io.BytesIO()
    pdf.save(
        buffer,
        force_version=version,
        object_stream_mode=ObjectStreamMode.generate
        if object_streams
        else ObjectStreamMode.disable,
        deterministic_id=True,
    )
    return buffer.getvalue()


def _letter(
    page_size: tuple[float, float],
    pages: int = 1,
    *,
    version: str = "1.7",
    object_streams: bool = False,
    title: str = "Surat Pernyataan",
) -> bytes:
    if not 1 <= pages <= PAGES_MAX:
        raise ValueError(f"pages must be within 1..{PAGES_MAX}, not {pages}")
    width, height = page_size
    if not (0 < width <= 14_400 and 0 < height <= 14_400):
        raise ValueError(f"page size {page_size} is outside what PDF allows (0, 14400] pt")
    pdf = _new_pdf(title)
    font = _helvetica(pdf)
    for number in range(1, pages + 1):
        _add_letter_page(pdf, font, (0, 0, width, height), page_number=number, page_count=pages)
    return _save(pdf, version=version, object_streams=object_streams)


# ---------------------------------------------------------------------------------------
# Good documents


@functools.cache
def letter_a4(pages: int = 1, *, version: str = "1.7", object_streams: bool = False) -> bytes:
    """A text letter on A4 (595.28 x 841.89 pt), Helvetica, ``pages`` pages."""
    return _letter(A4_PT, pages, version=version, object_streams=object_streams)


@functools.cache
def letter_size() -> bytes:
    """The same letter on US Letter (612 x 792 pt)."""
    return _letter(LETTER_PT)


@functools.cache
def odd_size(width: float, height: float) -> bytes:
    """The letter on a page of any size, in points (e.g. a receipt or a poster)."""
    return _letter((width, height))


def versions() -> dict[str, bytes]:
    """One A4 letter per PDF version. "1.5" uses a cross-reference stream and object
    streams; the others use a classic cross-reference table."""
    return {
        version: letter_a4(version=version, object_streams=version == "1.5")
        for version in _VERSIONS
    }


@functools.cache
def rotated(rotate: int) -> bytes:
    """An A4 letter whose page carries ``/Rotate rotate`` (90, 180 or 270)."""
    if rotate not in (90, 180, 270):
        raise ValueError(f"rotate must be 90, 180 or 270, not {rotate}")
    pdf = _new_pdf(f"Surat Pernyataan (diputar {rotate})")
    _add_letter_page(pdf, _helvetica(pdf), (0, 0, *A4_PT), rotate=rotate)
    return _save(pdf)


OFFSET_MEDIA_BOX = (100.0, 200.0, 695.28, 1041.89)
OFFSET_CROP_BOX = (130.0, 230.0, 665.28, 1011.89)


@functools.cache
def offset_boxes() -> bytes:
    """An A4-sized page whose MediaBox starts at (100, 200) and whose CropBox is inset a
    further 30 pt on each side (see OFFSET_MEDIA_BOX and OFFSET_CROP_BOX)."""
    pdf = _new_pdf("Surat Pernyataan (kotak bergeser)")
    _add_letter_page(pdf, _helvetica(pdf), OFFSET_MEDIA_BOX, crop_box=OFFSET_CROP_BOX)
    return _save(pdf)


def multi_page(pages: int) -> bytes:
    """An A4 letter of ``pages`` pages, each numbered in its footer."""
    return letter_a4(pages)


@functools.cache
def with_incremental_update() -> bytes:
    """An A4 letter that already carries one incremental update, written by hand: a new
    content stream, the page rewritten to draw it, and a new /Info, then a cross-reference
    section and a trailer with /Prev."""
    original = letter_a4()
    with Pdf.open(io.BytesIO(original)) as pdf:
        page = pdf.pages[0].obj
        page_number, page_generation = page.objgen
        contents_number, _ = page.Contents.objgen
        info_number, _ = pdf.trailer.Info.objgen
        size = int(pdf.trailer.Size)
        root_ref = "{} {} R".format(*pdf.Root.objgen)
        file_id = pdf.trailer.ID.unparse().decode("latin-1")
        page_without_contents = Dictionary({k: v for k, v in page.items() if k != "/Contents"})
        page_body = page_without_contents.unparse().decode("latin-1")

    previous_xref = int(re.findall(rb"startxref\s+(\d+)\s+%%EOF", original)[-1])
    new_stream_number = size
    added = b"BT /F1 12 Tf 72 300 Td (Disetujui oleh atasan langsung.) Tj ET\n"
    page_body = page_body.removesuffix(">>").rstrip()
    page_body += f" /Contents [ {contents_number} 0 R {new_stream_number} 0 R ] >>"

    objects = {
        new_stream_number: (0, b"<< /Length %d >>\nstream\n" % len(added) + added + b"endstream"),
        page_number: (page_generation, page_body.encode("latin-1")),
        info_number: (
            0,
            b"<< /Title (Surat Pernyataan \\(disetujui\\)) /Author (Budi Santoso) "
            b"/Producer (emeterai test corpus) /CreationDate (" + CREATION_DATE.encode() + b") "
            b"/ModDate (D:20240903101500+07'00') >>",
        ),
    }
    out = bytearray(original)
    offsets: dict[int, tuple[int, int]] = {}
    for number in sorted(objects):
        generation, body = objects[number]
        offsets[number] = (len(out), generation)
        out += b"%d %d obj\n" % (number, generation) + body + b"\nendobj\n"

    xref_offset = len(out)
    out += b"xref\n0 1\n0000000000 65535 f \n"
    for number in sorted(offsets):  # one subsection per object keeps this simple
        offset, generation = offsets[number]
        out += b"%d 1\n%010d %05d n \n" % (number, offset, generation)
    trailer = (
        f"trailer\n<< /Size {size + 1} /Root {root_ref} /Info {info_number} 0 R "
        f"/Prev {previous_xref} /ID {file_id} >>\n"
    )
    out += trailer.encode("latin-1") + b"startxref\n%d\n%%%%EOF\n" % xref_offset
    return bytes(out)


@functools.cache
def with_acroform() -> bytes:
    """An A4 letter with an AcroForm text field ("nama_pemohon") and its appearance."""
    pdf = _new_pdf("Formulir Pendaftaran")
    font = _helvetica(pdf)
    page = _add_letter_page(pdf, font, (0, 0, *A4_PT))
    value = "Budi Santoso"
    width, height = 220.0, 20.0
    appearance = pdf.make_stream(
        b"/Tx BMC q BT /Helv 11 Tf 0 g 2 6 Td " + _pdf_string(value) + b" Tj ET Q EMC\n",
        Type=Name.XObject,
        Subtype=Name.Form,
        BBox=Array([0, 0, width, height]),
        Resources=Dictionary(Font=Dictionary(Helv=font)),
    )
    field = pdf.make_indirect(
        Dictionary(
            Type=Name.Annot,
            Subtype=Name.Widget,
            FT=Name.Tx,
            T=String("nama_pemohon"),
            TU=String("Nama pemohon"),
            V=String(value),
            DA=String("/Helv 11 Tf 0 g"),
            F=4,
            Rect=Array([72, 440, 72 + width, 440 + height]),
            P=page.obj,
            MK=Dictionary(BC=Array([0, 0, 0]), BG=Array([1, 1, 1])),
            AP=Dictionary(N=appearance),
        )
    )
    page.obj.Annots = Array([field])
    pdf.Root.AcroForm = Dictionary(
        Fields=Array([field]),
        DA=String("/Helv 0 Tf 0 g"),
        DR=Dictionary(Font=Dictionary(Helv=font)),
    )
    return _save(pdf)


def _noise_page_jpeg(pixels: int, seed: int) -> bytes:
    """A "scanned" A4 page: off-white paper with sensor noise and lines of dark text-like
    marks. Noise makes the JPEG large per pixel, like a real phone scan."""
    width = max(64, round(math.sqrt(pixels / math.sqrt(2))))
    height = round(width * math.sqrt(2))
    rng = random.Random(seed)
    # Paper: grey levels 190..250, from uniform noise through a lookup table.
    paper_levels = bytes(190 + value * 60 // 255 for value in range(256))
    grey = Image.frombytes(
        "L", (width, height), rng.randbytes(width * height).translate(paper_levels)
    )
    draw = ImageDraw.Draw(grey)
    line_height = max(2, height // 120)
    for top in range(height // 8, height * 7 // 8, line_height * 3):
        left = width // 10
        while left < width * 85 // 100:
            word = rng.randint(width // 40, width // 10)
            draw.rectangle(
                (left, top, min(left + word, width * 9 // 10), top + line_height), fill=40
            )
            left += word + width // 60
    # A slightly warm paper tone, as phone scanners produce.
    red = grey
    green = grey.point(lambda value: max(0, value - 4))
    blue = grey.point(lambda value: max(0, value - 12))
    picture = Image.merge("RGB", (red, green, blue))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85, optimize=False)
    return buffer.getvalue()


def _pad_jpeg(jpeg: bytes, size_bytes: int) -> bytes:
    """Grow a JPEG to exactly ``size_bytes`` with comment (COM) segments after SOI."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    missing = size_bytes - len(jpeg)
    if missing < 0:
        raise ValueError(f"JPEG is already {len(jpeg)} bytes, more than {size_bytes}")
    segments = bytearray()
    while missing > 0:
        # A segment is FF FE, a 2-byte length that counts itself, then the payload.
        segment_bytes = min(missing, 65_535 + 2)
        if missing - segment_bytes in (1, 2, 3):  # too small for a segment of its own
            segment_bytes -= 4
        payload = segment_bytes - 4
        segments += b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + b"\x00" * payload
        missing -= segment_bytes
    return jpeg[:2] + bytes(segments) + jpeg[2:]


@functools.cache
def scanned_jpeg(target_bytes: int = 800_000) -> tuple[bytes, int, int]:
    """The JPEG inside ``scanned_page``: (data, width_px, height_px), exactly
    ``target_bytes`` long."""
    if not SCANNED_BYTES_MIN <= target_bytes <= SCANNED_BYTES_MAX:
        raise ValueError(
            f"target_bytes must be within {SCANNED_BYTES_MIN}..{SCANNED_BYTES_MAX}, "
            f"not {target_bytes}"
        )
    # Measure the bytes per pixel of this picture once, then size it to land a little
    # under the target, and pad the rest with a comment so the size is exact.
    probe_pixels = 200_000
    bytes_per_pixel = len(_noise_page_jpeg(probe_pixels, seed=1)) / probe_pixels
    pixels = int(target_bytes * 0.97 / bytes_per_pixel)
    for _ in range(5):
        jpeg = _noise_page_jpeg(pixels, seed=1)
        if len(jpeg) <= target_bytes:
            with Image.open(io.BytesIO(jpeg)) as picture:
                width, height = picture.size
            return _pad_jpeg(jpeg, target_bytes), width, height
        pixels = int(pixels * 0.95 * target_bytes / len(jpeg))
    raise RuntimeError(f"could not fit a scanned page into {target_bytes} bytes")


@functools.cache
def scanned_page(target_bytes: int = 800_000) -> bytes:
    """One A4 page that is a single JPEG of exactly ``target_bytes`` bytes (a phone scan).
    The whole file is about 1 KB larger than the JPEG."""
    jpeg, width, height = scanned_jpeg(target_bytes)
    pdf = _new_pdf("Hasil Pindai")
    image = pdf.make_stream(
        jpeg,
        Type=Name.XObject,
        Subtype=Name.Image,
        Width=width,
        Height=height,
        ColorSpace=Name.DeviceRGB,
        BitsPerComponent=8,
        Filter=Name.DCTDecode,
    )
    page_width, page_height = A4_PT
    contents = f"q {page_width} 0 0 {page_height} 0 0 cm /Im0 Do Q\n".encode()
    pdf.pages.append(
        pikepdf.Page(
            Dictionary(
                Type=Name.Page,
                MediaBox=Array([0, 0, page_width, page_height]),
                Resources=Dictionary(XObject=Dictionary(Im0=image)),
                Contents=pdf.make_stream(contents),
            )
        )
    )
    return _save(pdf)


QR_MODULE_PX = 4


@functools.cache
def qr_page(text: str, *, x_pt: float = 72.0, y_pt: float = 130.0, size_pt: float = 100.0) -> bytes:
    """An A4 letter with a QR code of ``text`` drawn as an image: its lower-left corner at
    (x_pt, y_pt) in PDF space, ``size_pt`` wide and high, quiet zone included. Useful to
    check QR decoding without a real stamp."""
    qr = segno.make(text, error="m", micro=False)
    modules = [list(row) for row in qr.matrix]
    quiet = 4
    side = (len(modules) + 2 * quiet) * QR_MODULE_PX
    picture = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(picture)
    for row_index, row in enumerate(modules):
        for column_index, dark in enumerate(row):
            if dark:
                left = (column_index + quiet) * QR_MODULE_PX
                top = (row_index + quiet) * QR_MODULE_PX
                draw.rectangle((left, top, left + QR_MODULE_PX - 1, top + QR_MODULE_PX - 1), fill=0)
    pdf = _new_pdf("Surat dengan kode QR")
    page = _add_letter_page(pdf, _helvetica(pdf), (0, 0, *A4_PT))
    image = pdf.make_stream(
        picture.tobytes(),
        Type=Name.XObject,
        Subtype=Name.Image,
        Width=side,
        Height=side,
        ColorSpace=Name.DeviceGray,
        BitsPerComponent=8,
    )
    page.obj.Resources.XObject = Dictionary(Qr0=image)
    page.contents_add(
        pdf.make_stream(f"q {size_pt} 0 0 {size_pt} {x_pt} {y_pt} cm /Qr0 Do Q\n".encode())
    )
    return _save(pdf)


# ---------------------------------------------------------------------------------------
# Bad documents


@functools.cache
def encrypted() -> bytes:
    """An A4 letter encrypted with AES-256; it opens only with USER_PASSWORD."""
    with Pdf.open(io.BytesIO(letter_a4())) as pdf:
        buffer = io.BytesIO()
        pdf.save(
            buffer,
            encryption=pikepdf.Encryption(user=USER_PASSWORD, owner=OWNER_PASSWORD, R=6),
            static_id=True,
        )
    return buffer.getvalue()


@functools.cache
def truncated() -> bytes:
    """A three-page letter cut in half: no cross-reference table, no trailer."""
    whole = letter_a4(3)
    return whole[: len(whole) // 2]


@functools.cache
def not_a_pdf() -> bytes:
    """A small PNG picture."""
    picture = Image.new("RGB", (64, 64), (230, 120, 160))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def garbage_pdf() -> bytes:
    """A PDF header followed by 4 KB of noise."""
    return b"%PDF-1.7\n" + random.Random(1945).randbytes(4096)
