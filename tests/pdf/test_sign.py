"""Stamp real PDFs and check them with the independent tools: pdfsig (trusted, whole
document), qpdf --check, zbarimg on the stamp's area, and the stamp's pink pixels where
the user asked for them, upright."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from emeterai.pdf import STAMP_SIZE_PT, Placement, StampSigner, examine_signatures, inspect_pdf
from emeterai.pdf.baseline import sign_plain_pyhanko
from emeterai.pki import SigningMaterial, create_issuer_pki, load_signing_material
from tests.pdf.conftest import PASSPHRASE, SERIAL, make_pdf, verify_url
from tests.support import corpus
from tests.support.external import assert_pdfsig_ok, assert_qpdf_ok, nss_db

QR_DPI = 150
LAYOUT_DPI = 36
# One pixel at LAYOUT_DPI is 2 pt; anti-aliasing may add one more at each edge.
LAYOUT_TOLERANCE_PX = 2


def render_page_png(
    path: Path, page: int, dpi: int, box_px: tuple[int, int, int, int] | None = None
) -> bytes:
    """pdftoppm with -cropbox: pixels measured from the visible page, as a person sees it.
    (Without -cropbox pdftoppm renders the MediaBox, and offsets would be off.)"""
    arguments = ["pdftoppm", "-cropbox", "-png", "-singlefile", "-r", str(dpi)]
    arguments += ["-f", str(page), "-l", str(page)]
    if box_px is not None:
        x, y, width, height = box_px
        arguments += ["-x", str(x), "-y", str(y), "-W", str(width), "-H", str(height)]
    subprocess.run([*arguments, str(path), str(path.with_suffix(""))], check=True, timeout=60)
    return path.with_suffix(".png").read_bytes()


def decode_qr(path: Path, page: int, box_px: tuple[int, int, int, int], dpi: int) -> list[str]:
    png = path.with_name(path.stem + "-qr.pdf")
    png.symlink_to(path)
    render_page_png(png, page, dpi, box_px)
    result = subprocess.run(
        ["zbarimg", "-q", "--raw", str(png.with_suffix(".png"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [line for line in result.stdout.splitlines() if line]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    page: int = 1
    # Visible position as a fraction of the free room (0 = left/bottom, 1 = right/top):
    # deliberately off-centre, so a mirrored or rotated placement cannot pass.
    fx: float = 0.8
    fy: float = 0.15


CASES = [
    Case("a4", corpus.letter_a4),
    Case("letter", corpus.letter_size),
    Case("landscape", lambda: corpus.odd_size(842.0, 595.0)),
    Case("rotate-90", lambda: corpus.rotated(90)),
    Case("rotate-180", lambda: corpus.rotated(180)),
    Case("rotate-270", lambda: corpus.rotated(270)),
    Case("offset-boxes", corpus.offset_boxes),
    Case("crop-offset", lambda: make_pdf(media_box=(0, 0, 700, 900), crop_box=(50, 60, 645, 852))),
    Case(
        "crop-offset-rotate-90",
        lambda: make_pdf(media_box=(0, 0, 700, 900), crop_box=(50, 60, 645, 852), rotate=90),
    ),
    Case(
        "crop-offset-rotate-270",
        lambda: make_pdf(media_box=(0, 0, 700, 900), crop_box=(50, 60, 645, 852), rotate=270),
    ),
    Case("multi-page-3", lambda: corpus.multi_page(4), page=3, fx=0.1, fy=0.9),
]


def _placement(data: bytes, case: Case) -> Placement:
    box = inspect_pdf(data, pages_max=500).pages[case.page - 1]
    return Placement(
        page=case.page,
        x_pt=round((box.width_pt - STAMP_SIZE_PT) * case.fx, 2),
        y_pt=round((box.height_pt - STAMP_SIZE_PT) * case.fy, 2),
    )


def _stamp_box_px(
    page_height_pt: float, placement: Placement, dpi: int
) -> tuple[int, int, int, int]:
    """(x, y, w, h) in pixels from the top-left of the rendered page."""
    scale = dpi / 72
    x = placement.x_pt * scale
    top = (page_height_pt - placement.y_pt - STAMP_SIZE_PT) * scale
    size = STAMP_SIZE_PT * scale
    return round(x), round(top), round(size), round(size)


def _threshold(image: Image.Image, minimum: int) -> Image.Image:
    return image.point(lambda value: 255 if value > minimum else 0)


def _pink_bbox(png: bytes) -> tuple[int, int, int, int]:
    """Bounding box of pink pixels: red, clearly redder than green, bluer than green.
    Black text, grey and white paper are not pink."""
    red, green, blue = Image.open(io.BytesIO(png)).convert("RGB").split()
    mask = ImageChops.multiply(
        ImageChops.multiply(_threshold(red, 150), _threshold(ImageChops.subtract(red, green), 25)),
        _threshold(ImageChops.subtract(blue, green), 0),
    )
    bbox = mask.getbbox()
    assert bbox is not None, "no pink pixel on the page"
    return bbox


@pytest.fixture(scope="module")
def upright_reference(
    stamp_signer: StampSigner, tmp_path_factory: pytest.TempPathFactory
) -> Image.Image:
    """The stamp as rendered on a plain unrotated page: what "upright" looks like."""
    data = make_pdf()
    placement = Placement(1, 100, 100)
    path = tmp_path_factory.mktemp("reference") / "reference.pdf"
    path.write_bytes(
        stamp_signer.sign(data, serial=SERIAL, verify_url=verify_url(), placement=placement)
    )
    png = render_page_png(path, 1, QR_DPI)
    return _crop(png, 842, placement)


def _crop(png: bytes, page_height_pt: float, placement: Placement) -> Image.Image:
    x, y, w, h = _stamp_box_px(page_height_pt, placement, QR_DPI)
    image = Image.open(io.BytesIO(png)).convert("L")
    return image.crop((x + 4, y + 4, x + w - 4, y + h - 4))


def _difference(a: Image.Image, b: Image.Image) -> float:
    b = b.resize(a.size)
    return float(ImageStat.Stat(ImageChops.difference(a, b)).mean[0])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_stamp_passes_independent_checks(
    case: Case,
    stamp_signer: StampSigner,
    nssdir: str,
    tmp_path: Path,
    upright_reference: Image.Image,
) -> None:
    data = case.build()
    placement = _placement(data, case)
    stamped = stamp_signer.sign(data, serial=SERIAL, verify_url=verify_url(), placement=placement)

    assert stamped.startswith(data), "the original bytes must be kept (incremental update)"
    path = tmp_path / f"{case.name}.pdf"
    path.write_bytes(stamped)
    assert_pdfsig_ok(path, nssdir)
    assert_qpdf_ok(path)

    page_box = inspect_pdf(stamped, pages_max=500).pages[case.page - 1]
    stamp_px = _stamp_box_px(page_box.height_pt, placement, QR_DPI)
    assert decode_qr(path, case.page, stamp_px, QR_DPI) == [verify_url()]

    # Where: the pink square sits exactly where the user asked, on the visible page.
    png = render_page_png(path, case.page, LAYOUT_DPI)
    left, top, right, bottom = _pink_bbox(png)
    want_x, want_y, want_w, want_h = _stamp_box_px(page_box.height_pt, placement, LAYOUT_DPI)
    assert abs(left - want_x) <= LAYOUT_TOLERANCE_PX
    assert abs(top - want_y) <= LAYOUT_TOLERANCE_PX
    assert abs(right - (want_x + want_w)) <= LAYOUT_TOLERANCE_PX
    assert abs(bottom - (want_y + want_h)) <= LAYOUT_TOLERANCE_PX

    # Upright: the stamp looks like the reference, and not like it turned.
    crop = _crop(render_page_png(path, case.page, QR_DPI), page_box.height_pt, placement)
    upright = _difference(upright_reference, crop)
    for angle in (90, 180, 270):
        assert upright < _difference(upright_reference.rotate(angle), crop) / 2


@pytest.mark.parametrize(
    "build",
    [
        corpus.with_acroform,
        corpus.with_incremental_update,
        lambda: corpus.letter_a4(2, version="1.6", object_streams=True),
        lambda: corpus.scanned_page(),
    ],
    ids=["acroform", "incremental", "xref-stream", "scanned"],
)
def test_stamp_on_harder_documents(
    build: Callable[[], bytes], stamp_signer: StampSigner, nssdir: str, tmp_path: Path
) -> None:
    data = build()
    stamped = stamp_signer.sign(
        data, serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 400, 40)
    )
    path = tmp_path / "stamped.pdf"
    path.write_bytes(stamped)
    assert_pdfsig_ok(path, nssdir)
    assert_qpdf_ok(path)
    assert stamped.startswith(data)


@pytest.mark.parametrize("version", sorted(corpus.versions()))
def test_stamp_every_pdf_version(
    version: str, stamp_signer: StampSigner, nssdir: str, tmp_path: Path
) -> None:
    data = corpus.versions()[version]
    path = tmp_path / "stamped.pdf"
    path.write_bytes(
        stamp_signer.sign(
            data, serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 50, 50)
        )
    )
    assert_pdfsig_ok(path, nssdir)
    assert_qpdf_ok(path)


def test_rsa_issuer(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    directory = tmp_path_factory.mktemp("pki-rsa") / "issuer"
    create_issuer_pki(directory, PASSPHRASE, algorithm="rsa-2048")
    material = load_signing_material(directory, PASSPHRASE)
    stamped = StampSigner(material).sign(
        corpus.letter_a4(), serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 60, 60)
    )
    path = tmp_path / "rsa.pdf"
    path.write_bytes(stamped)
    assert_pdfsig_ok(path, nss_db(tmp_path, material.root_cert_pem))
    assert_qpdf_ok(path)
    (report,) = examine_signatures(stamped, [material.root_cert_pem])
    assert report.intact and report.valid and report.trusted and report.covers_whole_file


def test_benchmark_baseline_signs_validly(material: SigningMaterial) -> None:
    signed = sign_plain_pyhanko(corpus.letter_a4(), material, Placement(1, 300, 60))
    (report,) = examine_signatures(signed, [material.root_cert_pem])
    assert report.intact and report.valid and report.trusted and report.covers_whole_file
