"""Fixtures for the pdf tests: one test PKI per session, a signer, an NSS trust store."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path

import pikepdf
import pytest
from pyhanko.keys import load_certs_from_pemder_data, load_private_key_from_pemder_data
from pyhanko.sign import signers
from pyhanko_certvalidator.registry import SimpleCertificateStore

from emeterai.pdf import StampSigner
from emeterai.pki import SigningMaterial, create_issuer_pki, load_signing_material
from tests.support.external import nss_db

PASSPHRASE = b"test passphrase"
SERIAL = "0123456789ABCDEFGHJKMN"
VERIFY_BASE = "http://127.0.0.1:8000/v/"
FIXED_NOW = dt.datetime(2024, 9, 2, 2, 0, tzinfo=dt.UTC)


def verify_url(serial: str = SERIAL) -> str:
    return VERIFY_BASE + serial


def make_pdf(
    *,
    media_box: Sequence[float] = (0, 0, 595, 842),
    crop_box: Sequence[float] | None = None,
    rotate: int = 0,
    pages: int = 1,
) -> bytes:
    """Blank pages with the given boxes (the corpus covers the ordinary shapes)."""
    pdf = pikepdf.new()
    for _ in range(pages):
        page = pdf.add_blank_page(page_size=(595, 842))
        page.obj.MediaBox = pikepdf.Array(list(media_box))
        if crop_box is not None:
            page.obj.CropBox = pikepdf.Array(list(crop_box))
        if rotate:
            page.obj.Rotate = rotate
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


def plain_pyhanko_signer(material: SigningMaterial) -> signers.SimpleSigner:
    """Someone else's ordinary pyHanko signer, for signatures that are not stamps."""
    (certificate,) = load_certs_from_pemder_data(material.signer_cert_pem)
    return signers.SimpleSigner(
        signing_cert=certificate,
        signing_key=load_private_key_from_pemder_data(material.signer_key_pem, material.passphrase),
        cert_registry=SimpleCertificateStore(),
    )


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "issuer"
    create_issuer_pki(directory, PASSPHRASE)
    return directory


@pytest.fixture(scope="session")
def material(pki_dir: Path) -> SigningMaterial:
    return load_signing_material(pki_dir, PASSPHRASE)


@pytest.fixture(scope="session")
def stamp_signer(material: SigningMaterial) -> StampSigner:
    return StampSigner(material)


@pytest.fixture(scope="session")
def untrusted_material(tmp_path_factory: pytest.TempPathFactory) -> SigningMaterial:
    """A look-alike issuer nobody trusts: same names, different keys."""
    directory = tmp_path_factory.mktemp("pki-forger") / "issuer"
    create_issuer_pki(directory, PASSPHRASE)
    return load_signing_material(directory, PASSPHRASE)


@pytest.fixture(scope="session")
def nssdir(tmp_path_factory: pytest.TempPathFactory, material: SigningMaterial) -> str:
    return nss_db(tmp_path_factory.mktemp("nss"), material.root_cert_pem)
