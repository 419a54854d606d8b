"""PAdES B-T: a real RFC 3161 exchange over HTTP with an in-process test TSA whose
certificate chains to the test issuer root."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign.timestamps import DummyTimeStamper

from emeterai.errors import SigningFailed
from emeterai.pdf import Placement, StampSigner, examine_signatures
from emeterai.pki import IssuerPki, SigningMaterial
from tests.pdf.conftest import PASSPHRASE, SERIAL, verify_url
from tests.support import corpus
from tests.support.external import assert_pdfsig_ok, assert_qpdf_ok

TSA_TIME = dt.datetime(2024, 9, 2, 9, 45, 0, tzinfo=dt.UTC)


def _tsa_stamper(pki_dir: Path) -> DummyTimeStamper:
    paths = IssuerPki.in_directory(pki_dir)
    root = x509.load_pem_x509_certificate(paths.root_cert.read_bytes())
    root_key = serialization.load_pem_private_key(paths.root_key.read_bytes(), PASSPHRASE)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    tsa_key = rsa.generate_private_key(
        public_exponent=65537, key_size=2048
    )  # pyHanko's test TSA is RSA-only
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emeterai test TSA")]))
        .issuer_name(root.subject)
        .public_key(tsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    key_der = tsa_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(key_der),
        fixed_dt=TSA_TIME,
    )


@pytest.fixture(scope="module")
def tsa_url(pki_dir: Path) -> Iterator[str]:
    stamper = _tsa_stamper(pki_dir)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            response = stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(response)))
            self.end_headers()
            self.wfile.write(response)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_b_t_signature_carries_the_tsa_time(
    material: SigningMaterial, tsa_url: str, nssdir: str, tmp_path: Path
) -> None:
    signer = StampSigner(material, timestamp_url=tsa_url)
    stamped = signer.sign(
        corpus.letter_a4(), serial=SERIAL, verify_url=verify_url(), placement=Placement(1, 60, 60)
    )
    path = tmp_path / "b-t.pdf"
    path.write_bytes(stamped)
    assert_pdfsig_ok(path, nssdir)
    assert_qpdf_ok(path)
    (report,) = examine_signatures(stamped, [material.root_cert_pem])
    assert report.intact and report.valid and report.trusted and report.modification_ok
    assert report.signed_at == TSA_TIME


def test_unreachable_tsa_fails_cleanly(material: SigningMaterial) -> None:
    signer = StampSigner(material, timestamp_url="http://127.0.0.1:9/tsa")
    with pytest.raises(SigningFailed):
        signer.sign(
            corpus.letter_a4(),
            serial=SERIAL,
            verify_url=verify_url(),
            placement=Placement(1, 60, 60),
        )
