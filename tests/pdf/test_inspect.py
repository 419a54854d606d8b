"""inspect_pdf and check_placement: the admission checks, and the refusals they raise."""

from __future__ import annotations

import io

import pytest
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers

from emeterai.errors import (
    AlreadyStamped,
    InvalidSerial,
    NotAPdf,
    PageOutOfRange,
    PdfEncrypted,
    PdfLocked,
    PdfMalformed,
    PdfTooManyPages,
    PositionOffPage,
)
from emeterai.pdf import PageBox, Placement, StampSigner, check_placement, inspect_pdf
from emeterai.pki import SigningMaterial
from tests.pdf.conftest import SERIAL, make_pdf, plain_pyhanko_signer, verify_url
from tests.support import corpus


def test_plain_a4() -> None:
    facts = inspect_pdf(corpus.letter_a4(2), pages_max=500)
    assert facts.page_count == 2
    assert facts.version == "1.7"
    assert facts.pages == (PageBox(595.28, 841.89),) * 2
    assert facts.stamp_serials == ()
    assert not facts.certified_no_changes


@pytest.mark.parametrize("rotate", [90, 270])
def test_quarter_turn_swaps_width_and_height(rotate: int) -> None:
    assert inspect_pdf(corpus.rotated(rotate), pages_max=1).pages == (PageBox(841.89, 595.28),)


def test_upside_down_keeps_width_and_height() -> None:
    assert inspect_pdf(corpus.rotated(180), pages_max=1).pages == (PageBox(595.28, 841.89),)


def test_visible_box_is_the_crop_box() -> None:
    facts = inspect_pdf(corpus.offset_boxes(), pages_max=1)
    x0, y0, x1, y1 = corpus.OFFSET_CROP_BOX
    assert facts.pages == (PageBox(pytest.approx(x1 - x0), pytest.approx(y1 - y0)),)  # type: ignore[arg-type]
    rotated = make_pdf(media_box=(0, 0, 700, 900), crop_box=(50, 60, 645, 852), rotate=-90)
    assert inspect_pdf(rotated, pages_max=1).pages == (PageBox(792, 595),)


def test_crop_box_is_clipped_to_media_box() -> None:
    data = make_pdf(media_box=(0, 0, 300, 400), crop_box=(-50, -50, 1000, 1000))
    assert inspect_pdf(data, pages_max=1).pages == (PageBox(300, 400),)


@pytest.mark.parametrize("version", sorted(corpus.versions()))
def test_versions(version: str) -> None:
    assert inspect_pdf(corpus.versions()[version], pages_max=5).version == version


def test_not_a_pdf() -> None:
    with pytest.raises(NotAPdf):
        inspect_pdf(corpus.not_a_pdf(), pages_max=5)


def test_encrypted() -> None:
    with pytest.raises(PdfEncrypted):
        inspect_pdf(corpus.encrypted(), pages_max=5)


def test_truncated() -> None:
    with pytest.raises(PdfMalformed):
        inspect_pdf(corpus.truncated(), pages_max=5)


def test_own_half_file() -> None:
    whole = corpus.letter_a4(3)
    with pytest.raises(PdfMalformed):
        inspect_pdf(whole[: len(whole) // 2], pages_max=5)


def test_garbage_after_header() -> None:
    with pytest.raises(PdfMalformed):
        inspect_pdf(corpus.garbage_pdf(), pages_max=5)


def test_too_many_pages() -> None:
    with pytest.raises(PdfTooManyPages):
        inspect_pdf(corpus.multi_page(5), pages_max=4)
    assert inspect_pdf(corpus.multi_page(5), pages_max=5).page_count == 5


def test_already_stamped(stamp_signer: StampSigner) -> None:
    stamped = stamp_signer.sign(
        corpus.with_acroform(),
        serial=SERIAL,
        verify_url=verify_url(),
        placement=Placement(1, 40, 40),
    )
    facts = inspect_pdf(stamped, pages_max=5)
    assert facts.stamp_serials == (SERIAL,)
    with pytest.raises(AlreadyStamped):
        stamp_signer.sign(
            stamped, serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 200, 200)
        )


def _certify(data: bytes, material: SigningMaterial, permission: fields.MDPPerm) -> bytes:
    output = signers.sign_pdf(
        IncrementalPdfFileWriter(io.BytesIO(data)),
        signers.PdfSignatureMetadata(
            field_name="Sertifikasi", certify=True, docmdp_permissions=permission
        ),
        signer=plain_pyhanko_signer(material),
    )
    return bytes(output.getvalue())


def test_certified_no_changes_is_locked(
    material: SigningMaterial, stamp_signer: StampSigner
) -> None:
    locked = _certify(corpus.letter_a4(), material, fields.MDPPerm.NO_CHANGES)
    assert inspect_pdf(locked, pages_max=5).certified_no_changes
    with pytest.raises(PdfLocked):
        stamp_signer.sign(
            locked, serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 40, 40)
        )


def test_certified_form_filling_may_be_stamped(
    material: SigningMaterial, stamp_signer: StampSigner
) -> None:
    certified = _certify(corpus.letter_a4(), material, fields.MDPPerm.FILL_FORMS)
    facts = inspect_pdf(certified, pages_max=5)
    assert not facts.certified_no_changes
    assert facts.stamp_serials == ()
    stamp_signer.sign(
        certified, serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 40, 40)
    )


@pytest.mark.parametrize(
    ("placement", "error"),
    [
        (Placement(0, 10, 10), PageOutOfRange),
        (Placement(3, 10, 10), PageOutOfRange),
        (Placement(1, -1, 10), PositionOffPage),
        (Placement(1, 10, -0.5), PositionOffPage),
        (Placement(1, 495.29, 10), PositionOffPage),
        (Placement(1, 10, 741.9), PositionOffPage),
        (Placement(1, float("nan"), 10), PositionOffPage),
        (Placement(1, float("inf"), 10), PositionOffPage),
    ],
)
def test_placement_refused(
    placement: Placement, error: type[Exception], stamp_signer: StampSigner
) -> None:
    data = corpus.letter_a4(2)
    facts = inspect_pdf(data, pages_max=5)
    with pytest.raises(error):
        check_placement(facts, placement)
    # The signer checks again: it never trusts its caller with a position.
    with pytest.raises(error):
        stamp_signer.sign(data, serial=SERIAL, verify_url=verify_url(), placement=placement)


def test_placement_accepted_at_the_edges() -> None:
    facts = inspect_pdf(corpus.letter_a4(2), pages_max=5)
    check_placement(facts, Placement(2, 0, 0))
    check_placement(facts, Placement(2, 495.28, 741.89))


def test_rotated_placement_uses_the_visible_page() -> None:
    facts = inspect_pdf(corpus.rotated(90), pages_max=5)
    check_placement(facts, Placement(1, 700, 400))  # fits only on the landscape view
    with pytest.raises(PositionOffPage):
        check_placement(facts, Placement(1, 400, 700))


def test_bad_serial_is_refused(stamp_signer: StampSigner) -> None:
    with pytest.raises(InvalidSerial):
        stamp_signer.sign(
            corpus.letter_a4(), serial="abc", verify_url=verify_url(), placement=Placement(1, 0, 0)
        )
