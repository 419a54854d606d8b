"""Stamping through the real use case, on SQLite and PostgreSQL.

Every stamped PDF here is checked by poppler's pdfsig, qpdf and zbarimg, and by our own
verifier; every refusal is checked to leave the quota and the registry untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from emeterai.audit import run_audit
from emeterai.db import transaction
from emeterai.errors import (
    EmeteraiError,
    IdempotencyConflict,
    SigningFailed,
)
from emeterai.pki import SigningMaterial, create_issuer_pki, load_signing_material
from emeterai.runtime import Runtime
from emeterai.serials import generate_serial, revoke_serial
from emeterai.stamping.signing import InProcessSigner, SignJob
from emeterai.verify.service import Verdict
from tests.conftest import PUBLIC_URL, FixedClock, make_settings
from tests.stamping.conftest import Desk, open_desk
from tests.support import corpus, tamper
from tests.support.external import assert_pdfsig_ok, assert_qpdf_ok, decode_qr

STAMP_PX_AT_150_DPI = 100 * 150 / 72


def _audit_ok(desk: Desk) -> None:
    with transaction(desk.runtime.sessions) as session:
        report = run_audit(session)
    assert report.ok, report.findings


def check_independently(
    desk: Desk, data: bytes, serial: str, tmp_path: Path, nssdir: str, *, page: int = 1
) -> None:
    path = tmp_path / f"{serial}.pdf"
    path.write_bytes(data)
    assert_pdfsig_ok(path, nssdir)
    assert_qpdf_ok(path)
    assert decode_qr(path, page) == [f"{PUBLIC_URL}/v/{serial}"]
    assert desk.verify(data).verdict is Verdict.GENUINE


DOCUMENTS: dict[str, tuple[Callable[[], bytes], int]] = {
    "a4-letter": (corpus.letter_a4, 1),
    "us-letter": (corpus.letter_size, 1),
    "odd-size": (lambda: corpus.odd_size(420, 300), 1),
    "rotated-90": (lambda: corpus.rotated(90), 1),
    "rotated-180": (lambda: corpus.rotated(180), 1),
    "rotated-270": (lambda: corpus.rotated(270), 1),
    "offset-boxes": (corpus.offset_boxes, 1),
    "multi-page-on-3": (lambda: corpus.multi_page(4), 3),
    "incremental-update": (corpus.with_incremental_update, 1),
    "acroform": (corpus.with_acroform, 1),
    "xref-stream": (lambda: corpus.letter_a4(version="1.5", object_streams=True), 1),
    "scanned-800kb": (corpus.scanned_page, 1),
}


@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_stamped_documents_pass_every_outside_check(
    desk: Desk, name: str, tmp_path: Path, trusted_nss: str
) -> None:
    make, page = DOCUMENTS[name]
    stamped = desk.stamp(make(), page=page)
    check_independently(desk, stamped.document, stamped.serial, tmp_path, trusted_nss, page=page)
    assert desk.balance().used == 1


@pytest.mark.parametrize("version", ["1.3", "1.4", "1.5", "1.6", "1.7", "2.0"])
def test_every_pdf_version_is_stamped(
    desk: Desk, version: str, tmp_path: Path, trusted_nss: str
) -> None:
    document = corpus.versions()[version]
    stamped = desk.stamp(document)
    check_independently(desk, stamped.document, stamped.serial, tmp_path, trusted_nss)


def test_a_party_signature_stays_valid(
    desk: Desk, tmp_path: Path, trusted_nss: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    party = _foreign_material(tmp_path_factory, "party")
    contract = tamper.sign_as_other_party(corpus.letter_a4(), party)
    stamped = desk.stamp(contract)
    check_independently(desk, stamped.document, stamped.serial, tmp_path, trusted_nss)
    from emeterai.pdf import examine_signatures

    reports = examine_signatures(stamped.document, [party.root_cert_pem])
    party_report = next(r for r in reports if r.field_name == "PartyA")
    assert party_report.intact and party_report.valid and party_report.trusted
    assert party_report.modification_ok


def _foreign_material(factory: pytest.TempPathFactory, label: str) -> SigningMaterial:
    directory = factory.mktemp(label) / "pki"
    create_issuer_pki(directory, b"other passphrase")
    return load_signing_material(directory, b"other passphrase")


REFUSALS: dict[str, tuple[Callable[[], bytes], dict[str, object], str]] = {
    "encrypted": (corpus.encrypted, {}, "PDF_ENCRYPTED"),
    "truncated": (corpus.truncated, {}, "PDF_MALFORMED"),
    "garbage": (corpus.garbage_pdf, {}, "PDF_MALFORMED"),
    "not-a-pdf": (corpus.not_a_pdf, {}, "NOT_A_PDF"),
    "page-out-of-range": (corpus.letter_a4, {"page": 2}, "PAGE_OUT_OF_RANGE"),
    "off-page-right": (corpus.letter_a4, {"x": 550.0, "y": 100.0}, "POSITION_OFF_PAGE"),
    "off-page-negative": (corpus.letter_a4, {"x": -5.0, "y": 100.0}, "POSITION_OFF_PAGE"),
    "off-page-rotated": (lambda: corpus.rotated(90), {"x": 100.0, "y": 560.0}, "POSITION_OFF_PAGE"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_have_codes_and_touch_no_quota(desk: Desk, name: str) -> None:
    make, options, code = REFUSALS[name]
    before = desk.balance()
    with pytest.raises(EmeteraiError) as refused:
        desk.stamp(make(), **options)  # type: ignore[arg-type]
    assert refused.value.code == code
    assert desk.balance() == before
    assert desk.serial_states() == []


def test_size_and_page_limits(runtime: Runtime, in_process_signer: InProcessSigner) -> None:
    base = runtime.settings
    desk = open_desk(runtime, in_process_signer, quota=1, email="l@example.id")
    cases = [
        (corpus.scanned_page(), {"upload_bytes_max": 100_000}, "PDF_TOO_LARGE"),
        (corpus.multi_page(4), {"pages_max": 3}, "PDF_TOO_MANY_PAGES"),
    ]
    for document, limits, code in cases:
        runtime.settings = make_settings(base.data_dir, base.resolved_database_url, **limits)
        with pytest.raises(EmeteraiError) as refused:
            desk.stamp(document, x=72, y=72)
        assert refused.value.code == code
    assert desk.balance().available == 1
    assert desk.serial_states() == []


def test_a_stamped_document_is_refused_a_second_stamp(desk: Desk) -> None:
    first = desk.stamp(corpus.letter_a4())
    with pytest.raises(EmeteraiError) as refused:
        desk.stamp(first.document)
    assert refused.value.code == "ALREADY_STAMPED"
    assert desk.balance().used == 1
    second = desk.stamp(first.document, additional=True, x=72, y=72)
    assert second.serial != first.serial
    assert desk.verify(second.document).verdict is Verdict.GENUINE
    assert desk.balance().used == 2


def test_no_quota_left(runtime: Runtime, in_process_signer: InProcessSigner) -> None:
    desk = open_desk(runtime, in_process_signer, quota=1, email="b@example.id")
    desk.stamp(corpus.letter_a4())
    with pytest.raises(EmeteraiError) as refused:
        desk.stamp(corpus.letter_size())
    assert refused.value.code == "QUOTA_EXHAUSTED"
    balance = desk.balance()
    assert (balance.available, balance.reserved, balance.used) == (0, 0, 1)
    assert desk.serial_states() == ["used"]


def test_same_idempotency_key_returns_the_same_stamp_and_charges_once(desk: Desk) -> None:
    document = corpus.letter_a4()
    first = desk.stamp(document, key="upload-1")
    again = desk.stamp(document, key="upload-1")
    assert again.serial == first.serial
    assert again.document == first.document
    assert again.replayed and not first.replayed
    assert desk.balance().used == 1
    with pytest.raises(IdempotencyConflict):
        desk.stamp(corpus.letter_size(), key="upload-1")
    assert desk.balance().used == 1
    _audit_ok(desk)


def test_a_failed_signature_voids_the_reservation(desk: Desk) -> None:
    def broken(job: SignJob) -> bytes:
        raise RuntimeError("the HSM fell over")

    with pytest.raises(SigningFailed):
        desk.stamp(corpus.letter_a4(), key="k", signer=broken)
    balance = desk.balance()
    assert (balance.available, balance.reserved, balance.used) == (5, 0, 0)
    assert desk.serial_states() == ["voided"]
    # The key is free again: the retry stamps, once.
    retry = desk.stamp(corpus.letter_a4(), key="k")
    assert desk.balance().used == 1
    assert desk.verify(retry.document).verdict is Verdict.GENUINE
    _audit_ok(desk)


# --- Tampering never verifies as GENUINE ------------------------------------------------


def test_flipped_byte_is_tampered(desk: Desk) -> None:
    stamped = desk.stamp(corpus.letter_a4())
    result = desk.verify(tamper.flip_byte_in_signed_range(stamped.document))
    assert result.verdict is Verdict.TAMPERED


def test_content_added_after_stamping_is_tampered(
    desk: Desk, tmp_path: Path, trusted_nss: str
) -> None:
    stamped = desk.stamp(corpus.letter_a4())
    changed = tamper.append_content_update(stamped.document)
    result = desk.verify(changed)
    assert result.verdict is Verdict.TAMPERED
    assert any("changed after" in reason for reason in result.reasons)


def test_pasted_stamp_picture_is_forged(desk: Desk) -> None:
    stamped = desk.stamp(corpus.letter_a4())
    forged = tamper.paste_stamp_picture(stamped.document, corpus.letter_size())
    assert desk.verify(forged).verdict is Verdict.FORGED


def test_signature_by_an_untrusted_key_is_forged(
    desk: Desk, tmp_path_factory: pytest.TempPathFactory
) -> None:
    impostor = _foreign_material(tmp_path_factory, "impostor")
    serial = generate_serial()
    forged = tamper.sign_with(impostor, corpus.letter_a4(), serial, f"{PUBLIC_URL}/v/{serial}")
    result = desk.verify(forged)
    assert result.verdict is Verdict.FORGED
    assert any("does not trust" in reason for reason in result.reasons)


def test_revoked_serial(desk: Desk) -> None:
    stamped = desk.stamp(corpus.letter_a4())
    with transaction(desk.runtime.sessions) as session:
        revoke_serial(session, stamped.serial, reason="fraud", now=desk.runtime.clock.now())
    result = desk.verify(stamped.document)
    assert result.verdict is Verdict.REVOKED
    _audit_ok(desk)


def test_registered_serial_on_another_document_is_reused(
    desk: Desk, issuer_material: SigningMaterial
) -> None:
    stamped = desk.stamp(corpus.letter_a4())
    other = tamper.sign_with(
        issuer_material, corpus.letter_size(), stamped.serial, f"{PUBLIC_URL}/v/{stamped.serial}"
    )
    assert desk.verify(other).verdict is Verdict.REUSED


def test_serial_never_issued_is_unknown(desk: Desk, issuer_material: SigningMaterial) -> None:
    serial = generate_serial()
    other = tamper.sign_with(
        issuer_material, corpus.letter_a4(), serial, f"{PUBLIC_URL}/v/{serial}"
    )
    assert desk.verify(other).verdict is Verdict.UNKNOWN_SERIAL


def test_plain_document_is_not_stamped(desk: Desk) -> None:
    result = desk.verify(corpus.letter_a4())
    assert result.verdict is Verdict.NOT_STAMPED
    assert result.document_sha256 == hashlib.sha256(corpus.letter_a4()).hexdigest()


def test_concurrent_twins_with_one_key_stamp_once(
    desk: Desk, in_process_signer: InProcessSigner
) -> None:
    """Eight simultaneous retries of one request: one stamp, one charge, no 500."""
    import threading
    import time

    def slow(job: SignJob) -> bytes:
        time.sleep(0.3)
        return in_process_signer(job)

    document = corpus.letter_a4()
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            outcomes.append(desk.stamp(document, key="twin", signer=slow).serial)
        except EmeteraiError as error:
            outcomes.append(error.code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    serials = {outcome for outcome in outcomes if outcome != "REQUEST_IN_PROGRESS"}
    assert len(serials) == 1, outcomes
    assert desk.balance().used == 1
    assert desk.stamp(document, key="twin").serial in serials
    _audit_ok(desk)


def test_signatures_after_the_stamp(desk: Desk, tmp_path_factory: pytest.TempPathFactory) -> None:
    """An invisible party signature after the stamp is harmless; a visible one can draw
    over the page the stamp vouches for, so it is TAMPERED."""
    party = _foreign_material(tmp_path_factory, "later-party")
    stamped = desk.stamp(corpus.letter_a4()).document
    invisible = tamper.sign_as_other_party(stamped, party)
    assert desk.verify(invisible).verdict is Verdict.GENUINE
    overlay = tamper.sign_as_other_party(
        stamped, party, field_name="Amendment", box=(20, 300, 575, 800)
    )
    result = desk.verify(overlay)
    assert result.verdict is Verdict.TAMPERED
    assert any("Amendment" in reason for reason in result.reasons)


def test_a_stamp_outlives_its_certificate(
    desk: Desk, clock: FixedClock, issuer_material: SigningMaterial
) -> None:
    """Stamp duty documents last for years: once the stamping certificate has expired, a
    registered stamp is still GENUINE, and a signature the registry does not know is not."""
    stamped = desk.stamp(corpus.letter_a4())
    serial = generate_serial()
    unknown = tamper.sign_with(
        issuer_material, corpus.letter_size(), serial, f"{PUBLIC_URL}/v/{serial}"
    )
    clock.advance(5 * 365 * 86_400)  # past the 3-year stamping certificate
    result = desk.verify(stamped.document)
    assert result.verdict is Verdict.GENUINE
    assert any("expired" in reason for reason in result.reasons)
    assert desk.verify(unknown).verdict is not Verdict.GENUINE
