"""examine_signatures tells genuine from tampered, forged and harmlessly extended files;
find_stamp_pictures spots a stamp picture that no signature backs."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re

import pikepdf
import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers

from emeterai.errors import NotAPdf, PdfEncrypted, PdfMalformed
from emeterai.pdf import (
    Placement,
    SignatureReport,
    StampSigner,
    examine_signatures,
    find_stamp_pictures,
)
from emeterai.pki import SigningMaterial
from tests.pdf.conftest import SERIAL, make_pdf, plain_pyhanko_signer, verify_url
from tests.support import corpus

SIGNED_AT = dt.datetime(2024, 9, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def stamped(stamp_signer: StampSigner) -> bytes:
    return stamp_signer.sign(
        corpus.multi_page(3),
        serial=SERIAL,
        verify_url=verify_url(),
        placement=Placement(2, 300, 80),
        signed_at=SIGNED_AT,
    )


def _only(reports: tuple[SignatureReport, ...]) -> SignatureReport:
    assert len(reports) == 1, reports
    return reports[0]


def test_genuine_stamp(stamped: bytes, material: SigningMaterial) -> None:
    report = _only(examine_signatures(stamped, [material.root_cert_pem]))
    assert report.intact and report.valid and report.trusted
    assert report.modification_ok and report.modification_level == "NONE"
    assert report.covers_whole_file
    assert report.field_name == "eMeterai-" + SERIAL
    assert report.serial == SERIAL
    assert report.reason is not None and report.reason.startswith(f"[{SERIAL}]")
    assert report.signed_at == SIGNED_AT
    assert "emeterai" in report.signer_subject
    assert report.revision_sha256 == hashlib.sha256(stamped).hexdigest()
    assert report.page == 2


def test_flipped_byte_breaks_integrity(stamped: bytes, material: SigningMaterial) -> None:
    # A byte of the page text, well inside the first signed range.
    position = stamped.index(b"Budi Santoso")
    tampered = stamped[:position] + b"X" + stamped[position + 1 :]
    report = _only(examine_signatures(tampered, [material.root_cert_pem]))
    assert not report.intact
    assert not report.trusted  # pyHanko only trusts an intact signature
    # `valid` is about the CMS signature over its attributes, which nobody touched.
    assert report.valid


def test_later_content_change_is_not_a_harmless_modification(
    stamped: bytes, material: SigningMaterial
) -> None:
    writer = IncrementalPdfFileWriter(io.BytesIO(stamped))
    font = generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Font"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
            generic.pdf_name("/BaseFont"): generic.pdf_name("/Helvetica"),
        }
    )
    resources = generic.DictionaryObject(
        {
            generic.pdf_name("/Font"): generic.DictionaryObject(
                {generic.pdf_name("/FAdd"): writer.add_object(font)}
            )
        }
    )
    content = generic.StreamObject(stream_data=b"BT /FAdd 24 Tf 72 400 Td (DIBATALKAN) Tj ET")
    writer.add_stream_to_page(1, writer.add_object(content), resources)
    output = io.BytesIO()
    writer.write(output)
    changed = output.getvalue()
    assert changed.startswith(stamped)

    report = _only(examine_signatures(changed, [material.root_cert_pem]))
    assert report.intact and report.valid and report.trusted
    assert not report.covers_whole_file
    assert not report.modification_ok
    assert report.modification_level == "OTHER"
    # The signed revision is still identified exactly.
    assert report.revision_sha256 == hashlib.sha256(stamped).hexdigest()


def test_untrusted_signer(untrusted_material: SigningMaterial, material: SigningMaterial) -> None:
    forged = StampSigner(untrusted_material).sign(
        make_pdf(), serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 50, 50)
    )
    report = _only(examine_signatures(forged, [material.root_cert_pem]))
    assert report.intact and report.valid
    assert not report.trusted
    assert report.serial == SERIAL


def test_second_harmless_signature_keeps_ours_ok(
    stamped: bytes, material: SigningMaterial, untrusted_material: SigningMaterial
) -> None:
    other = plain_pyhanko_signer(untrusted_material)
    writer = IncrementalPdfFileWriter(io.BytesIO(stamped))
    output = signers.sign_pdf(
        writer,
        signers.PdfSignatureMetadata(
            field_name="Persetujuan", subfilter=fields.SigSeedSubFilter.PADES
        ),
        signer=other,
        new_field_spec=fields.SigFieldSpec("Persetujuan"),
    )
    twice = output.getvalue()

    ours, theirs = examine_signatures(twice, [material.root_cert_pem])
    assert ours.serial == SERIAL
    assert ours.intact and ours.valid and ours.trusted
    assert ours.modification_ok
    assert ours.modification_level in ("LTA_UPDATES", "FORM_FILLING")
    assert not ours.covers_whole_file
    assert theirs.field_name == "Persetujuan"
    assert theirs.intact and theirs.valid and not theirs.trusted
    assert theirs.covers_whole_file and theirs.serial is None


def test_broken_signature_container_is_reported_not_raised(
    stamped: bytes, material: SigningMaterial
) -> None:
    match = re.search(rb"/Contents <([0-9a-fA-F]{16})", stamped)
    assert match is not None
    broken = stamped[: match.start(1)] + b"00" * 8 + stamped[match.end(1) :]
    report = _only(examine_signatures(broken, [material.root_cert_pem]))
    assert not report.intact and not report.valid and not report.trusted
    assert report.serial == SERIAL
    assert report.page == 2


def test_unsigned_document_has_no_reports(material: SigningMaterial) -> None:
    assert examine_signatures(corpus.letter_a4(), [material.root_cert_pem]) == ()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (corpus.not_a_pdf(), NotAPdf),
        (corpus.encrypted(), PdfEncrypted),
    ],
    ids=["png", "encrypted"],
)
def test_unreadable_files_raise(
    data: bytes, error: type[Exception], material: SigningMaterial
) -> None:
    with pytest.raises(error):
        examine_signatures(data, [material.root_cert_pem])


def test_garbage_raises_malformed_or_yields_nothing(material: SigningMaterial) -> None:
    try:
        reports = examine_signatures(corpus.garbage_pdf(), [material.root_cert_pem])
    except PdfMalformed:
        return
    assert reports == ()


# --- pictures ---------------------------------------------------------------------------


def test_copied_stamp_page_is_a_picture_without_signature(stamped: bytes) -> None:
    with pikepdf.open(io.BytesIO(stamped)) as source:
        copy = pikepdf.new()
        copy.pages.append(source.pages[1])
        buffer = io.BytesIO()
        # The copied widget is orphaned: no AcroForm reaches it, so no signature backs it.
        with pytest.warns(pikepdf.PageCopyWarning):
            copy.save(buffer)
    found = find_stamp_pictures(buffer.getvalue())
    assert found
    assert any(f"/EmeteraiSerial {SERIAL}" in item for item in found), found


def test_flattened_stamp_in_page_content_is_found(stamped: bytes) -> None:
    """The stamp's appearance pasted into the page as a form XObject (as a 'flatten'
    or a copy-paste in an editor does): no widget, no signature."""
    with pikepdf.open(io.BytesIO(stamped)) as source:
        appearance = source.pages[1].obj.Annots[0].AP.N
        target = pikepdf.open(io.BytesIO(corpus.letter_a4()))
        page = target.pages[0]
        name = page.add_resource(target.copy_foreign(appearance), pikepdf.Name.XObject)
        page.contents_add(
            target.make_stream(b"q 1 0 0 1 400 60 cm " + str(name).encode() + b" Do Q")
        )
        buffer = io.BytesIO()
        target.save(buffer)
    found = find_stamp_pictures(buffer.getvalue())
    assert any(item.startswith("page 1: form XObject marked") for item in found), found


def test_genuine_and_plain_documents_show_no_loose_picture(stamped: bytes) -> None:
    assert find_stamp_pictures(stamped) == ()
    assert find_stamp_pictures(corpus.letter_a4()) == ()
    assert find_stamp_pictures(corpus.with_acroform()) == ()


def test_text_of_a_stamp_in_page_content_is_found() -> None:
    pdf = pikepdf.new()
    page = pdf.add_blank_page()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    page.add_resource(font, pikepdf.Name.Font, pikepdf.Name.F1)
    page.contents_add(pdf.make_stream(b"BT /F1 9 Tf 100 100 Td (METERAI ELEKTRONIK) Tj ET"))
    buffer = io.BytesIO()
    pdf.save(buffer)
    assert find_stamp_pictures(buffer.getvalue()) == ("page 1 text 'METERAI ELEKTRONIK'",)


def test_stamping_keeps_an_earlier_signature_valid(
    stamp_signer: StampSigner, material: SigningMaterial, untrusted_material: SigningMaterial
) -> None:
    signed = signers.sign_pdf(
        IncrementalPdfFileWriter(io.BytesIO(corpus.with_acroform())),
        signers.PdfSignatureMetadata(field_name="Pemohon", subfilter=fields.SigSeedSubFilter.PADES),
        signer=plain_pyhanko_signer(untrusted_material),
    ).getvalue()
    stamped = stamp_signer.sign(
        signed, serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 400, 40)
    )
    earlier, stamp = examine_signatures(stamped, [material.root_cert_pem])
    assert earlier.field_name == "Pemohon"
    assert earlier.intact and earlier.valid and earlier.modification_ok
    assert stamp.serial == SERIAL and stamp.trusted and stamp.covers_whole_file
