"""The stamping key on a PKCS#11 token: generated there, never extractable, never a file.

The issuer's root stays where `emeterai init` put it (or where `emeterai pki import` put
the production one); it issues the stamping certificate for the token's public key.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, ObjectClass, PublicKey
from pkcs11.exceptions import NoSuchKey, PKCS11Error
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from emeterai.errors import IssuerNotInitialised
from emeterai.pki import (
    TOKEN_CERTIFICATE_NAME,
    TokenKey,
    issue_stamping_certificate,
    root_key_and_certificate,
    write_token_certificate,
)


def _token_public_key(token: TokenKey) -> ec.EllipticCurvePublicKey:
    """The token's stamping public key, generating the key pair on first use."""
    try:
        library = pkcs11.lib(token.module_path)
        device = library.get_token(token_label=token.token_label)
        with device.open(user_pin=token.pin, rw=True) as session:
            try:
                public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=token.key_label)
            except NoSuchKey:
                parameters = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                    local=True,
                )
                public, _ = parameters.generate_keypair(
                    store=True,
                    label=token.key_label,
                    id=token.key_label.encode(),
                    private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
                )
            der = encode_ec_public_key(cast(PublicKey, public))
    except PKCS11Error as error:
        raise IssuerNotInitialised(
            f"the PKCS#11 token {token.token_label!r} cannot be used: {type(error).__name__}"
        ) from error
    key = serialization.load_der_public_key(der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise IssuerNotInitialised("the token's stamping key is not an EC key")
    return key


def enroll_token_key(
    directory: Path, passphrase: bytes, token: TokenKey, *, now: dt.datetime | None = None
) -> tuple[Path, bool]:
    """Make sure the token holds a stamping key with a certificate from our root.

    Idempotent: returns the certificate's path and whether anything was created.
    """
    public_key = _token_public_key(token)
    path = directory / TOKEN_CERTIFICATE_NAME
    if path.exists():
        existing = x509.load_pem_x509_certificate(path.read_bytes())
        if existing.public_key() == public_key:
            return path, False
    root_key, root = root_key_and_certificate(directory, passphrase)
    certificate = issue_stamping_certificate(
        root_key, root, public_key, now or dt.datetime.now(dt.UTC)
    )
    return write_token_certificate(directory, certificate), True
