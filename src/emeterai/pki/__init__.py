"""The issuer's keys: a development root CA and the stamping certificate it issues.

Only `cryptography` is used here. Private keys live on disk as PKCS#8 PEM, encrypted with
the operator's passphrase; files are 0600 inside a 0700 directory.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from emeterai.errors import IssuerNotInitialised, KeyPassphraseWrong

__all__ = [
    "ALGORITHMS",
    "IssuerPki",
    "SigningMaterial",
    "create_issuer_pki",
    "load_signing_material",
    "root_certificate_pem",
]

ALGORITHMS = ("ecdsa-p256", "rsa-2048")
TOKEN_CERTIFICATE_NAME = "stamping-token.crt.pem"  # noqa: S105 (a file name, not a secret)
ROOT_VALIDITY_DAYS = 20 * 365
SIGNER_VALIDITY_DAYS = 3 * 365
ORGANISATION = "emeterai (development)"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
CLOCK_SKEW = dt.timedelta(hours=1)  # tolerate small clock skew at the verifier


@dataclass(frozen=True)
class IssuerPki:
    """Paths of the four files inside the PKI directory."""

    root_cert: Path
    root_key: Path
    signer_cert: Path
    signer_key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> IssuerPki:
        return cls(
            root_cert=directory / "root-ca.crt.pem",
            root_key=directory / "root-ca.key.pem",
            signer_cert=directory / "stamping.crt.pem",
            signer_key=directory / "stamping.key.pem",
        )

    def files(self) -> tuple[Path, ...]:
        return (self.root_cert, self.root_key, self.signer_cert, self.signer_key)


@dataclass(frozen=True)
class TokenKey:
    """Where a PKCS#11 token keeps the stamping key (an HSM; SoftHSM2 in tests)."""

    module_path: str
    token_label: str
    key_label: str
    pin: str

    def __repr__(self) -> str:  # never print the PIN
        return f"TokenKey(token_label={self.token_label!r}, key_label={self.key_label!r})"


@dataclass(frozen=True)
class SigningMaterial:
    """What a signer needs. The key stays encrypted; `passphrase` opens it.

    Keeping the PEM (not a key object) makes the value picklable, so it can be handed to
    signing processes, which each load the key once.
    """

    signer_key_pem: bytes
    passphrase: bytes
    signer_cert_pem: bytes
    root_cert_pem: bytes
    algorithm: str
    # Set when the stamping key lives on a PKCS#11 token; signer_key_pem is then empty.
    token: TokenKey | None = None

    def __repr__(self) -> str:  # never print the passphrase
        return f"SigningMaterial(algorithm={self.algorithm!r})"

    def load_private_key(self) -> PrivateKey:
        return _load_private_key(self.signer_key_pem, self.passphrase)


def _new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key algorithm {algorithm!r}; choose one of {ALGORITHMS}")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "ID"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=signing,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )


def _build_root(root_key: PrivateKey, now: dt.datetime) -> x509.Certificate:
    root_name = _name("emeterai Issuer Root CA")
    return (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=ROOT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )


def issue_stamping_certificate(
    root_key: PrivateKey, root: x509.Certificate, public_key: PublicKey, now: dt.datetime
) -> x509.Certificate:
    """The stamping certificate for `public_key` (a file key, or one kept on a token)."""
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(_name("emeterai e-Meterai Stamping"))
        .issuer_name(root.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=SIGNER_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )


def _build_certificates(
    root_key: PrivateKey, signer_key: PrivateKey, now: dt.datetime
) -> tuple[x509.Certificate, x509.Certificate]:
    root = _build_root(root_key, now)
    return root, issue_stamping_certificate(root_key, root, signer_key.public_key(), now)


def _usable(paths: IssuerPki) -> bool:
    """Complete enough to stamp. The root's private key may be absent: an imported
    production root keeps it offline."""
    return paths.root_cert.exists() and paths.signer_cert.exists() and paths.signer_key.exists()


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL + mode at creation: the key is never world-readable, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def create_issuer_pki(
    directory: Path,
    passphrase: bytes,
    *,
    algorithm: str = "ecdsa-p256",
    now: dt.datetime | None = None,
) -> tuple[IssuerPki, bool]:
    """Create the development root CA and stamping certificate, once.

    Returns the paths and whether anything was created. If all four files exist, nothing
    changes. A partial set (a crash mid-way) is replaced as a whole.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown key algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    if not passphrase:
        raise ValueError("the key passphrase must not be empty")
    paths = IssuerPki.in_directory(directory)
    if _usable(paths):
        return paths, False
    now = now or dt.datetime.now(dt.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for path in paths.files():
        path.unlink(missing_ok=True)

    root_key = _new_key(algorithm)
    signer_key = _new_key(algorithm)
    root, signer = _build_certificates(root_key, signer_key, now)
    encryption = serialization.BestAvailableEncryption(passphrase)
    for key, key_path in ((root_key, paths.root_key), (signer_key, paths.signer_key)):
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        _write_private(key_path, pem)
    # The signer certificate is written last: its presence marks a complete set.
    _write_private(paths.root_cert, root.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.signer_cert, signer.public_bytes(serialization.Encoding.PEM))
    return paths, True


def _load_private_key(pem: bytes, passphrase: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as error:
        raise KeyPassphraseWrong() from error
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyPassphraseWrong("the stamping key is of an unsupported type")
    return key


def _algorithm_of(key: PrivateKey) -> str:
    return "ecdsa-p256" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa-2048"


def load_signing_material(
    directory: Path, passphrase: bytes, *, token: TokenKey | None = None
) -> SigningMaterial:
    """Read the stamping key and certificates; check the passphrase opens the key.

    With a token, the key stays on it: only the certificate `enroll_token_key` issued for
    it is read here.
    """
    paths = IssuerPki.in_directory(directory)
    if token is not None:
        certificate = directory / TOKEN_CERTIFICATE_NAME
        if not (paths.root_cert.exists() and certificate.exists()):
            raise IssuerNotInitialised("run 'emeterai pki enroll-token' first")
        return SigningMaterial(
            signer_key_pem=b"",
            passphrase=b"",
            signer_cert_pem=certificate.read_bytes(),
            root_cert_pem=paths.root_cert.read_bytes(),
            algorithm="ecdsa-p256",
            token=token,
        )
    if not _usable(paths):
        raise IssuerNotInitialised()
    key_pem = paths.signer_key.read_bytes()
    key = _load_private_key(key_pem, passphrase)
    return SigningMaterial(
        signer_key_pem=key_pem,
        passphrase=passphrase,
        signer_cert_pem=paths.signer_cert.read_bytes(),
        root_cert_pem=paths.root_cert.read_bytes(),
        algorithm=_algorithm_of(key),
    )


def root_certificate_pem(directory: Path) -> bytes:
    path = IssuerPki.in_directory(directory).root_cert
    if not path.exists():
        raise IssuerNotInitialised()
    return path.read_bytes()


def root_key_and_certificate(
    directory: Path, passphrase: bytes
) -> tuple[PrivateKey, x509.Certificate]:
    paths = IssuerPki.in_directory(directory)
    if not (paths.root_key.exists() and paths.root_cert.exists()):
        raise IssuerNotInitialised()
    root_key = _load_private_key(paths.root_key.read_bytes(), passphrase)
    return root_key, x509.load_pem_x509_certificate(paths.root_cert.read_bytes())


def write_token_certificate(directory: Path, certificate: x509.Certificate) -> Path:
    path = directory / TOKEN_CERTIFICATE_NAME
    path.unlink(missing_ok=True)
    _write_private(path, certificate.public_bytes(serialization.Encoding.PEM))
    return path


def import_issuer(
    directory: Path,
    passphrase: bytes,
    *,
    root_cert_pem: bytes,
    signer_cert_pem: bytes,
    signer_key_pem: bytes,
    signer_key_password: bytes | None = None,
) -> IssuerPki:
    """Install a production issuer: checks the chain and the key, then stores the key
    encrypted with our passphrase. Replaces whatever development issuer was there."""
    try:
        root = x509.load_pem_x509_certificate(root_cert_pem)
        signer = x509.load_pem_x509_certificate(signer_cert_pem)
        key = serialization.load_pem_private_key(signer_key_pem, password=signer_key_password)
    except (ValueError, TypeError) as error:
        raise IssuerNotInitialised(f"the files to import do not read: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise IssuerNotInitialised("the stamping key must be ECDSA or RSA")
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise IssuerNotInitialised("the root certificate is not a CA")
    try:
        signer.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise IssuerNotInitialised("the stamping certificate is not issued by that root") from error
    if signer.public_key() != key.public_key():
        raise IssuerNotInitialised("the stamping key does not match its certificate")
    paths = IssuerPki.in_directory(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for path in paths.files():
        path.unlink(missing_ok=True)
    encryption = serialization.BestAvailableEncryption(passphrase)
    _write_private(
        paths.signer_key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ),
    )
    _write_private(paths.root_cert, root.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.signer_cert, signer.public_bytes(serialization.Encoding.PEM))
    return paths
