"""The sample PDFs are what they claim to be: good ones pass qpdf and open with the
expected pages, rotation and boxes; bad ones fail the way a stamping service will see."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from tests.support import corpus
from tests.support.external import assert_qpdf_ok


def _version_sample(version: str) -> Callable[[], bytes]:
    return lambda: corpus.versions()[version]


GOOD: dict[str, Callable[[], bytes]] = {
    "letter_a4": corpus.letter_a4,
    "letter_a4_objstm": lambda: corpus.letter_a4(2, version="1.6", object_streams=True),
    "letter_size": corpus.letter_size,
    "odd_size": lambda: corpus.odd_size(283.46, 419.53),
    "rotated_90": lambda: corpus.rotated(90),
    "rotated_180": lambda: corpus.rotated(180),
    "rotated_270": lambda: corpus.rotated(270),
    "offset_boxes": corpus.offset_boxes,
    "multi_page": lambda: corpus.multi_page(12),
    "with_incremental_update": corpus.with_incremental_update,
    "with_acroform": corpus.with_acroform,
    "scanned_page": corpus.scanned_page,
    "qr_page": lambda: corpus.qr_page("https://meterai.test/v/0123456789ABCDEFGHJKMN"),
    **{f"version_{version}": _version_sample(version) for version in corpus.versions()},
}


def _open(data: bytes) -> pikepdf.Pdf:
    return pikepdf.open(io.BytesIO(data), attempt_recovery=False)


def _write(tmp_path: Path, data: bytes, name: str = "sample.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _boxes(data: bytes, page_index: int = 0) -> tuple[list[float], list[float], int]:
    with _open(data) as pdf:
        page = pdf.pages[page_index]
        return (
            [float(v) for v in page.mediabox],
            [float(v) for v in page.cropbox],
            int(page.obj.get("/Rotate", 0)),
        )


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_sample_passes_qpdf_check(name: str, tmp_path: Path) -> None:
    assert_qpdf_ok(_write(tmp_path, GOOD[name]()))


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_sample_is_deterministic(name: str) -> None:
    first = GOOD[name]()
    for value in vars(corpus).values():
        if getattr(value, "__module__", None) == corpus.__name__ and callable(
            getattr(value, "cache_clear", None)
        ):
            value.cache_clear()
    assert GOOD[name]() == first


@pytest.mark.parametrize(
    ("data", "expected_size"),
    [
        (corpus.letter_a4(), corpus.A4_PT),
        (corpus.letter_size(), corpus.LETTER_PT),
        (corpus.odd_size(283.46, 419.53), (283.46, 419.53)),
    ],
    ids=["a4", "us-letter", "a6"],
)
def test_page_sizes(data: bytes, expected_size: tuple[float, float]) -> None:
    media_box, crop_box, rotate = _boxes(data)
    assert media_box == pytest.approx([0, 0, *expected_size])
    assert crop_box == media_box
    assert rotate == 0


def test_letter_holds_real_helvetica_text() -> None:
    with _open(corpus.letter_a4()) as pdf:
        page = pdf.pages[0]
        font = page.Resources.Font.F1
        assert font.BaseFont == pikepdf.Name.Helvetica
        operators = [str(item.operator) for item in pikepdf.parse_content_stream(page)]
        shown = b"".join(
            bytes(item.operands[0])
            for item in pikepdf.parse_content_stream(page)
            if str(item.operator) in ("Tj", "'")
        )
    assert "Tf" in operators
    assert b"SURAT PERNYATAAN" in shown
    assert b"Halaman 1 dari 1" in shown


@pytest.mark.parametrize("pages", [1, 3, 501])
def test_page_count(pages: int) -> None:
    with _open(corpus.multi_page(pages)) as pdf:
        assert len(pdf.pages) == pages


def test_page_count_is_bounded() -> None:
    with pytest.raises(ValueError, match="pages"):
        corpus.letter_a4(0)
    with pytest.raises(ValueError, match="pages"):
        corpus.letter_a4(corpus.PAGES_MAX + 1)


def test_versions_and_cross_reference_kinds() -> None:
    samples = corpus.versions()
    assert sorted(samples) == ["1.3", "1.4", "1.5", "1.6", "1.7", "2.0"]
    for version, data in samples.items():
        assert data.startswith(f"%PDF-{version}\n".encode())
        with _open(data) as pdf:
            assert pdf.pdf_version == version
            assert len(pdf.pages) == 1
        uses_xref_stream = b"/Type /XRef" in data
        assert uses_xref_stream == (version == "1.5"), version
        assert (b"/Type /ObjStm" in data) == (version == "1.5"), version
        assert (b"\nxref\n" in data) != uses_xref_stream


def test_object_streams_need_pdf_1_5() -> None:
    with pytest.raises(ValueError, match=r"1\.5"):
        corpus.letter_a4(version="1.4", object_streams=True)


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotated(rotate: int) -> None:
    media_box, _, actual = _boxes(corpus.rotated(rotate))
    assert actual == rotate
    assert media_box == pytest.approx([0, 0, *corpus.A4_PT])


def test_rotated_rejects_other_angles() -> None:
    with pytest.raises(ValueError, match="rotate"):
        corpus.rotated(45)


def test_offset_boxes() -> None:
    media_box, crop_box, _ = _boxes(corpus.offset_boxes())
    assert media_box == pytest.approx(list(corpus.OFFSET_MEDIA_BOX))
    assert crop_box == pytest.approx(list(corpus.OFFSET_CROP_BOX))
    assert media_box[:2] != [0, 0]
    assert crop_box[0] > media_box[0] and crop_box[1] > media_box[1]
    assert crop_box[2] < media_box[2] and crop_box[3] < media_box[3]


def test_incremental_update_is_a_second_revision(tmp_path: Path) -> None:
    data = corpus.with_incremental_update()
    original = corpus.letter_a4()
    assert data.startswith(original)
    assert data.count(b"%%EOF") == 2
    assert b"/Prev " in data[len(original) :]
    with _open(data) as pdf:
        assert len(pdf.pages) == 1
        assert str(pdf.trailer.Info.Title) == "Surat Pernyataan (disetujui)"
        contents = pdf.pages[0].Contents
        assert isinstance(contents, pikepdf.Array) and len(contents) == 2
        page_number, page_generation = pdf.pages[0].objgen
    # qpdf follows /Prev without reconstructing the file, and finds the rewritten page in
    # the appended section.
    path = _write(tmp_path, data)
    assert_qpdf_ok(path)
    shown = subprocess.run(
        ["qpdf", "--show-xref", str(path)], capture_output=True, text=True, check=True
    ).stdout
    prefix = f"{page_number}/{page_generation}: uncompressed; offset = "
    (line,) = [line for line in shown.splitlines() if line.startswith(prefix)]
    assert int(line.removeprefix(prefix)) > len(original)


def test_acroform_has_a_text_field_with_appearance() -> None:
    with _open(corpus.with_acroform()) as pdf:
        fields = pdf.Root.AcroForm.Fields
        assert len(fields) == 1
        field = fields[0]
        assert pikepdf.Name.Tx == field.FT
        assert str(field.T) == "nama_pemohon"
        assert field.AP.N.Subtype == pikepdf.Name.Form
        assert pdf.pages[0].Annots[0].objgen == field.objgen


def test_scanned_page_is_one_jpeg_of_the_target_size() -> None:
    data = corpus.scanned_page()
    jpeg, width, height = corpus.scanned_jpeg()
    assert len(jpeg) == 800_000
    assert 800_000 < len(data) < 800_000 + 4_000
    with _open(data) as pdf:
        assert len(pdf.pages) == 1
        images = list(pdf.pages[0].Resources.XObject.values())
        assert len(images) == 1
        assert images[0].Subtype == pikepdf.Name.Image
        assert images[0].Filter == pikepdf.Name.DCTDecode
        assert images[0].read_raw_bytes() == jpeg
    with Image.open(io.BytesIO(jpeg)) as picture:
        assert picture.format == "JPEG"
        assert picture.size == (width, height)
        picture.load()
    assert height / width == pytest.approx(2**0.5, rel=0.01)


@pytest.mark.parametrize("target_bytes", [50_000, 300_001, 2_000_000])
def test_scanned_page_other_sizes(target_bytes: int) -> None:
    jpeg, _, _ = corpus.scanned_jpeg(target_bytes)
    assert len(jpeg) == target_bytes
    with Image.open(io.BytesIO(jpeg)) as picture:
        picture.load()


def test_encrypted_needs_the_password(tmp_path: Path) -> None:
    data = corpus.encrypted()
    with pytest.raises(pikepdf.PasswordError):
        _open(data)
    with pikepdf.open(io.BytesIO(data), password=corpus.USER_PASSWORD) as pdf:
        assert pdf.is_encrypted
        assert pdf.encryption.R == 6
        assert len(pdf.pages) == 1
    with pytest.raises(AssertionError, match="invalid password"):
        assert_qpdf_ok(_write(tmp_path, data))


def test_truncated(tmp_path: Path) -> None:
    data = corpus.truncated()
    assert data.startswith(b"%PDF-1.7")
    assert b"%%EOF" not in data and b"startxref" not in data
    with pytest.raises(pikepdf.PdfError):
        _open(data)
    with pytest.raises(AssertionError, match="exit 2"):
        assert_qpdf_ok(_write(tmp_path, data))


@pytest.mark.parametrize("builder", [corpus.not_a_pdf, corpus.garbage_pdf])
def test_not_a_pdf_and_garbage(builder: Callable[[], bytes], tmp_path: Path) -> None:
    data = builder()
    with pytest.raises(pikepdf.PdfError):
        _open(data)
    # Even with recovery, there is nothing to recover.
    with pytest.raises(pikepdf.PdfError):
        pikepdf.open(io.BytesIO(data))
    with pytest.raises(AssertionError):
        assert_qpdf_ok(_write(tmp_path, data))


def test_not_a_pdf_is_a_png() -> None:
    data = corpus.not_a_pdf()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert corpus.garbage_pdf().startswith(b"%PDF-1.7\n")
