"""The development issuer PKI: created once, keys locked down, chain verifies."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from emeterai.errors import IssuerNotInitialised, KeyPassphraseWrong
from emeterai.pki import (
    IssuerPki,
    create_issuer_pki,
    load_signing_material,
    root_certificate_pem,
)

PASSPHRASE = b"correct horse battery staple"
NOW = dt.datetime(2024, 9, 2, 2, 0, tzinfo=dt.UTC)


def _snapshot(pki: IssuerPki) -> dict[Path, tuple[bytes, int]]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in pki.files()}


@pytest.fixture(scope="module", params=["ecdsa-p256", "rsa-2048"])
def issuer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, IssuerPki, str]:
    algorithm: str = request.param
    directory = tmp_path_factory.mktemp(algorithm) / "pki"
    pki, created = create_issuer_pki(directory, PASSPHRASE, algorithm=algorithm, now=NOW)
    assert created
    return directory, pki, algorithm


def test_second_call_changes_nothing(issuer: tuple[Path, IssuerPki, str]) -> None:
    directory, pki, algorithm = issuer
    before = _snapshot(pki)
    again, created = create_issuer_pki(directory, PASSPHRASE, algorithm=algorithm)
    assert not created
    assert again == pki
    assert _snapshot(pki) == before


def test_files_are_private(issuer: tuple[Path, IssuerPki, str]) -> None:
    directory, pki, _ = issuer
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in pki.files():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_private_keys_are_encrypted(issuer: tuple[Path, IssuerPki, str]) -> None:
    _, pki, _ = issuer
    for path in (pki.root_key, pki.signer_key):
        assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_wrong_passphrase_is_refused(issuer: tuple[Path, IssuerPki, str]) -> None:
    directory, _, _ = issuer
    with pytest.raises(KeyPassphraseWrong):
        load_signing_material(directory, b"not the passphrase")


def test_chain_verifies(issuer: tuple[Path, IssuerPki, str]) -> None:
    directory, _, algorithm = issuer
    material = load_signing_material(directory, PASSPHRASE)
    assert material.algorithm == algorithm
    assert material.root_cert_pem == root_certificate_pem(directory)
    root = x509.load_pem_x509_certificate(material.root_cert_pem)
    signer = x509.load_pem_x509_certificate(material.signer_cert_pem)

    signer.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    root_constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert root_constraints.ca and root_constraints.path_length == 0
    signer_constraints = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not signer_constraints.ca
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_cert_sign
    root_usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert root_usage.key_cert_sign and root_usage.crl_sign
    assert signer.not_valid_after_utc - NOW < dt.timedelta(days=4 * 365)
    assert root.not_valid_after_utc - NOW > dt.timedelta(days=19 * 365)

    key = material.load_private_key()
    public = signer.public_key()
    if algorithm == "ecdsa-p256":
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        assert isinstance(public, ec.EllipticCurvePublicKey)
        from cryptography.hazmat.primitives import hashes

        public.verify(
            key.sign(b"stamp", ec.ECDSA(hashes.SHA256())), b"stamp", ec.ECDSA(hashes.SHA256())
        )
    else:
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        assert isinstance(public, rsa.RSAPublicKey)
        from cryptography.hazmat.primitives import hashes

        signature = key.sign(b"stamp", padding.PKCS1v15(), hashes.SHA256())
        public.verify(signature, b"stamp", padding.PKCS1v15(), hashes.SHA256())


def test_missing_issuer_is_reported(tmp_path: Path) -> None:
    with pytest.raises(IssuerNotInitialised):
        load_signing_material(tmp_path / "nothing", PASSPHRASE)
    with pytest.raises(IssuerNotInitialised):
        root_certificate_pem(tmp_path / "nothing")


def test_material_repr_hides_passphrase(issuer: tuple[Path, IssuerPki, str]) -> None:
    directory, _, _ = issuer
    assert PASSPHRASE.decode() not in repr(load_signing_material(directory, PASSPHRASE))


def test_unknown_algorithm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key algorithm"):
        create_issuer_pki(tmp_path / "pki", PASSPHRASE, algorithm="dsa-1024")
    assert not (tmp_path / "pki").exists()
