"""The external-check helpers catch what they are meant to catch. The signature checks run
on PDFs signed here by pyHanko with a throwaway two-level PKI, so that the pdfsig parsing
(the last signature, trust, whole-document coverage) is tested against real output."""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko_certvalidator.registry import SimpleCertificateStore

from tests.support import corpus
from tests.support.external import (
    assert_pdfsig_ok,
    assert_qpdf_ok,
    decode_qr,
    nss_db,
    pdfsig_report,
    render_page_png,
)

VERIFY_URL = "https://meterai.test/v/0123456789ABCDEFGHJKMN"


def _write(tmp_path: Path, data: bytes, name: str = "sample.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------
# qpdf


def test_qpdf_ok_on_a_good_file(tmp_path: Path) -> None:
    assert_qpdf_ok(_write(tmp_path, corpus.letter_a4()))


def test_qpdf_errors_fail(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"errors \(exit 2\)"):
        assert_qpdf_ok(_write(tmp_path, corpus.truncated()))


def test_qpdf_warnings_fail(tmp_path: Path) -> None:
    # Seven bytes after the header shift every offset: qpdf repairs the file and warns.
    data = corpus.letter_a4()
    shifted = data[:9] + b"%extra\n" + data[9:]
    with pytest.raises(AssertionError, match=r"warnings \(exit 3\)"):
        assert_qpdf_ok(_write(tmp_path, shifted))


# ---------------------------------------------------------------------------------------
# Rendering and QR codes


def test_render_page_png_size(tmp_path: Path) -> None:
    path = _write(tmp_path, corpus.letter_a4(2))
    png = render_page_png(path, 2, 72)
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG"
        # pdftoppm rounds partial pixels up: 595.28 x 841.89 pt at 72 dpi.
        assert picture.size == (596, 842)


def test_render_rejects_missing_pages(tmp_path: Path) -> None:
    path = _write(tmp_path, corpus.letter_a4())
    with pytest.raises(ValueError, match="from 1"):
        render_page_png(path, 0, 72)
    with pytest.raises(AssertionError, match="pdftoppm"):
        render_page_png(path, 2, 72)


def test_decode_qr_on_a_plain_page(tmp_path: Path) -> None:
    assert decode_qr(_write(tmp_path, corpus.letter_a4()), 1) == []


def test_decode_qr_finds_the_text(tmp_path: Path) -> None:
    path = _write(tmp_path, corpus.qr_page(VERIFY_URL))
    assert decode_qr(path, 1) == [VERIFY_URL]


def _qr_box_px(dpi: int, margin_pt: float) -> tuple[int, int, int, int]:
    """Where qr_page's default QR lands on the rendered page (top-left origin)."""
    scale = dpi / 72
    x_pt, y_pt, size_pt = 72.0, 130.0, 100.0
    top_pt = corpus.A4_PT[1] - (y_pt + size_pt)
    return (
        round((x_pt - margin_pt) * scale),
        round((top_pt - margin_pt) * scale),
        round((size_pt + 2 * margin_pt) * scale),
        round((size_pt + 2 * margin_pt) * scale),
    )


@pytest.mark.parametrize("dpi", [100, 150, 300])
def test_decode_qr_in_a_box(dpi: int, tmp_path: Path) -> None:
    path = _write(tmp_path, corpus.qr_page(VERIFY_URL))
    assert decode_qr(path, 1, _qr_box_px(dpi, margin_pt=10), dpi=dpi) == [VERIFY_URL]


def test_decode_qr_box_elsewhere_finds_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path, corpus.qr_page(VERIFY_URL))
    x, y, width, height = _qr_box_px(150, margin_pt=10)
    assert decode_qr(path, 1, (x + 400, y, width, height)) == []
    assert decode_qr(path, 1, (x, y - 600, width, height)) == []


def test_decode_qr_rejects_a_bad_box(tmp_path: Path) -> None:
    path = _write(tmp_path, corpus.qr_page(VERIFY_URL))
    with pytest.raises(ValueError, match="box_px"):
        decode_qr(path, 1, (0, 0, 0, 10))


# ---------------------------------------------------------------------------------------
# Signatures


@dataclass(frozen=True)
class _Identity:
    root_pem: bytes
    signer: signers.SimpleSigner


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "ID"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "emeterai test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    usage = {
        "digital_signature": not is_ca,
        "content_commitment": not is_ca,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": is_ca,
        "crl_sign": is_ca,
        "encipher_only": False,
        "decipher_only": False,
    }
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _identity(label: str) -> _Identity:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate(
        f"{label} Root", root_key.public_key(), f"{label} Root", root_key, is_ca=True
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate(
        f"{label} Signer", signer_key.public_key(), f"{label} Root", root_key, is_ca=False
    )

    def der(certificate: x509.Certificate) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))

    key_der = signer_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signer = signers.SimpleSigner(
        signing_cert=der(leaf),
        signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
        cert_registry=SimpleCertificateStore.from_certs([der(root)]),
    )
    return _Identity(root.public_bytes(serialization.Encoding.PEM), signer)


@pytest.fixture(scope="module")
def issuer() -> _Identity:
    return _identity("Issuer")


@pytest.fixture(scope="module")
def stranger() -> _Identity:
    return _identity("Stranger")


def _sign(data: bytes, identity: _Identity, field_name: str) -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(data))
    output = io.BytesIO()
    signers.sign_pdf(
        writer,
        signers.PdfSignatureMetadata(field_name=field_name, md_algorithm="sha256"),
        signer=identity.signer,
        output=output,
    )
    return output.getvalue()


def test_pdfsig_on_an_unsigned_file(tmp_path: Path, issuer: _Identity) -> None:
    nssdir = nss_db(tmp_path, issuer.root_pem)
    path = _write(tmp_path, corpus.letter_a4())
    assert "does not contain any signatures" in pdfsig_report(path, nssdir)
    with pytest.raises(AssertionError, match="no signature"):
        assert_pdfsig_ok(path, nssdir)


def test_nss_db_trusts_the_root(tmp_path: Path, issuer: _Identity) -> None:
    nssdir = nss_db(tmp_path, issuer.root_pem)
    assert nssdir.startswith("sql:")
    assert (Path(nssdir.removeprefix("sql:")) / "cert9.db").is_file()
    # Two databases in one tmp_path do not collide.
    assert nss_db(tmp_path, issuer.root_pem) != nssdir


def test_pdfsig_ok_on_a_signed_file(tmp_path: Path, issuer: _Identity) -> None:
    nssdir = nss_db(tmp_path, issuer.root_pem)
    path = _write(tmp_path, _sign(corpus.letter_a4(), issuer, "Stamp"))
    assert_pdfsig_ok(path, nssdir)
    assert_qpdf_ok(path)


def test_pdfsig_untrusted_root_fails(tmp_path: Path, issuer: _Identity) -> None:
    # The database trusts a different root than the one the signer chains to.
    nssdir = nss_db(tmp_path, _identity("Other").root_pem)
    path = _write(tmp_path, _sign(corpus.letter_a4(), issuer, "Stamp"))
    with pytest.raises(AssertionError, match="Certificate is Trusted"):
        assert_pdfsig_ok(path, nssdir)


def test_pdfsig_bytes_after_the_signature_fail(tmp_path: Path, issuer: _Identity) -> None:
    nssdir = nss_db(tmp_path, issuer.root_pem)
    signed = _sign(corpus.letter_a4(), issuer, "Stamp")
    path = _write(tmp_path, signed + b"\n% appended after signing\n")
    with pytest.raises(AssertionError, match="Total document signed"):
        assert_pdfsig_ok(path, nssdir)


def test_pdfsig_tampered_content_fails(tmp_path: Path, issuer: _Identity) -> None:
    nssdir = nss_db(tmp_path, issuer.root_pem)
    signed = _sign(corpus.letter_a4(), issuer, "Stamp")
    tampered = signed.replace(b"Budi Santoso", b"Budi Santosa", 1)
    assert tampered != signed
    path = _write(tmp_path, tampered)
    with pytest.raises(AssertionError, match="Signature is Valid"):
        assert_pdfsig_ok(path, nssdir)


def test_pdfsig_checks_the_last_signature(
    tmp_path: Path, issuer: _Identity, stranger: _Identity
) -> None:
    nssdir = nss_db(tmp_path, issuer.root_pem)
    # A stranger signs first (untrusted here); the issuer's stamp comes last: accepted.
    stamped_last = _sign(_sign(corpus.letter_a4(), stranger, "Applicant"), issuer, "Stamp")
    path = _write(tmp_path, stamped_last, "stamped-last.pdf")
    report = pdfsig_report(path, nssdir)
    assert "Signature #1:" in report and "Signature #2:" in report
    assert_pdfsig_ok(path, nssdir)

    # The other way round, the last signature is the untrusted one: rejected.
    stranger_last = _sign(_sign(corpus.letter_a4(), issuer, "Stamp"), stranger, "Applicant")
    path = _write(tmp_path, stranger_last, "stranger-last.pdf")
    with pytest.raises(AssertionError, match="signature #2"):
        assert_pdfsig_ok(path, nssdir)
