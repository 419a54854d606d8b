"""Production key handling: the stamping key on a PKCS#11 token (SoftHSM2), and an
imported issuer whose root key stays offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, ObjectClass

from emeterai.errors import IssuerNotInitialised
from emeterai.pdf import Placement, StampSigner, examine_signatures
from emeterai.pki import (
    IssuerPki,
    TokenKey,
    create_issuer_pki,
    import_issuer,
    load_signing_material,
)
from emeterai.pki.token import enroll_token_key
from tests.support import corpus

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PASSPHRASE = b"token test passphrase"
SERIAL = "0123456789ABCDEFGHJKMN"


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenKey]:
    """One SoftHSM2 token per module (the library reads its configuration once)."""
    if not Path(SOFTHSM_MODULE).exists() or shutil.which("softhsm2-util") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("SoftHSM2 is required with CI=true (Debian package softhsm2)")
        pytest.skip("SoftHSM2 is not installed")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    configuration = root / "softhsm2.conf"
    configuration.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(configuration)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "emeterai-test",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield TokenKey(SOFTHSM_MODULE, "emeterai-test", "emeterai-stamping", "1234")
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def test_stamping_key_on_a_token_signs_and_never_leaves_it(
    softhsm: TokenKey, tmp_path: Path
) -> None:
    directory = tmp_path / "pki"
    create_issuer_pki(directory, PASSPHRASE)
    path, created = enroll_token_key(directory, PASSPHRASE, softhsm)
    assert created and path.exists()
    assert enroll_token_key(directory, PASSPHRASE, softhsm) == (path, False)

    material = load_signing_material(directory, b"", token=softhsm)
    assert material.signer_key_pem == b""
    signed = StampSigner(material).sign(
        corpus.letter_a4(),
        serial=SERIAL,
        verify_url=f"https://emeterai.test/v/{SERIAL}",
        placement=Placement(page=1, x_pt=72, y_pt=72),
    )
    (report,) = examine_signatures(signed, [material.root_cert_pem])
    assert report.intact and report.valid and report.trusted and report.serial == SERIAL

    token = pkcs11.lib(softhsm.module_path).get_token(token_label=softhsm.token_label)
    with token.open() as session:  # the signer logged this application in already
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=softhsm.key_label)
        assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE]


def test_cli_stamps_with_the_token(softhsm: TokenKey, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMETERAI_")}
    env.update(
        EMETERAI_DATA_DIR=str(tmp_path / "var"),
        EMETERAI_KEY_PASSPHRASE=PASSPHRASE.decode(),
        EMETERAI_PKCS11_MODULE=softhsm.module_path,
        EMETERAI_PKCS11_TOKEN_LABEL=softhsm.token_label,
        EMETERAI_PKCS11_KEY_LABEL="cli-stamping",
        EMETERAI_PKCS11_PIN=softhsm.pin,
    )

    def cli(*arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "emeterai", *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    cli("init")
    assert "issued" in cli("pki", "enroll-token")
    cli("account", "create", "hsm@example.id")
    cli("quota", "add", "hsm@example.id", "1", "--reference", "r")
    source = tmp_path / "in.pdf"
    source.write_bytes(corpus.letter_a4())
    cli("stamp", str(source), "-o", str(tmp_path / "out.pdf"), "--account", "hsm@example.id")
    assert '"verdict": "GENUINE"' in cli("verify", str(tmp_path / "out.pdf"), "--json")


def _production_issuer(tmp_path: Path) -> tuple[bytes, bytes, bytes]:
    """A 'production' CA made elsewhere: its files, the stamping key unencrypted."""
    elsewhere = tmp_path / "ca-elsewhere"
    create_issuer_pki(elsewhere, b"their passphrase")
    paths = IssuerPki.in_directory(elsewhere)
    key = serialization.load_pem_private_key(paths.signer_key.read_bytes(), b"their passphrase")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return paths.root_cert.read_bytes(), paths.signer_cert.read_bytes(), key_pem


def test_imported_issuer_signs_and_init_keeps_it(tmp_path: Path) -> None:
    root_pem, signer_pem, key_pem = _production_issuer(tmp_path)
    directory = tmp_path / "pki"
    create_issuer_pki(directory, PASSPHRASE)  # the development issuer it replaces
    paths = import_issuer(
        directory,
        PASSPHRASE,
        root_cert_pem=root_pem,
        signer_cert_pem=signer_pem,
        signer_key_pem=key_pem,
    )
    assert not paths.root_key.exists()  # the production root's key stays offline
    assert b"ENCRYPTED" in paths.signer_key.read_bytes()
    assert create_issuer_pki(directory, PASSPHRASE)[1] is False
    material = load_signing_material(directory, PASSPHRASE)
    signed = StampSigner(material).sign(
        corpus.letter_a4(),
        serial=SERIAL,
        verify_url=f"https://emeterai.test/v/{SERIAL}",
        placement=Placement(page=1, x_pt=72, y_pt=72),
    )
    (report,) = examine_signatures(signed, [root_pem])
    assert report.trusted


def test_import_refuses_a_broken_chain_or_a_foreign_key(tmp_path: Path) -> None:
    root_pem, signer_pem, key_pem = _production_issuer(tmp_path)
    other_root, _, other_key = _production_issuer(tmp_path / "other")
    with pytest.raises(IssuerNotInitialised, match="not issued by that root"):
        import_issuer(
            tmp_path / "a",
            PASSPHRASE,
            root_cert_pem=other_root,
            signer_cert_pem=signer_pem,
            signer_key_pem=key_pem,
        )
    with pytest.raises(IssuerNotInitialised, match="does not match"):
        import_issuer(
            tmp_path / "b",
            PASSPHRASE,
            root_cert_pem=root_pem,
            signer_cert_pem=signer_pem,
            signer_key_pem=other_key,
        )
