"""Stamping: the visible e-Meterai and its PAdES signature, in ONE incremental update.

Tuned against the measurements in notes/pdf-signing-facts.md:
- the key is loaded once per `StampSigner` (pyHanko's SimpleSigner re-parses it for
  every signature, which costs 60-85 ms with RSA);
- `bytes_reserved` is fixed, so pyHanko does not make a dry-run signature to size it;
- the QR code uses a fixed mask (see `appearance`).

We build the signature field, its widget and our own appearance ourselves, then let
pyHanko fill the existing empty field with `NoOpStampStyle`, which keeps our /AP
(see `SigAppearanceSetup.apply` in pyhanko.sign.signers.cms_embedder).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from io import BytesIO
from typing import Any, cast

import httpx
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name, pdf_string
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError, set_tsp_headers
from pyhanko.sign.validation.pdf_embedded import read_certification_data
from pyhanko.stamp import NoOpStampStyle
from pyhanko_certvalidator.registry import SimpleCertificateStore

from emeterai.errors import (
    AlreadyStamped,
    EmeteraiError,
    InvalidSerial,
    PageOutOfRange,
    PdfEncrypted,
    PdfLocked,
    PdfMalformed,
    SigningFailed,
)
from emeterai.pdf.appearance import FONT_BASE_NAMES, MARKER_KEY, appearance_content
from emeterai.pdf.geometry import (
    STAMP_SIZE_PT,
    PageGeometry,
    Placement,
    check_fits,
    check_page_number,
    page_geometry,
)
from emeterai.pki import SigningMaterial, TokenKey

SERIAL_PATTERN = re.compile(r"[0-9A-Z]{22}")
FIELD_PREFIX = "eMeterai-"
REASON_SUFFIX = "e-Meterai Rp10.000"
_PAGE_TREE_DEPTH_MAX = 64
_TIMESTAMP_TIMEOUT_S = 10.0
# Room for the timestamp token (RFC 3161 response with the TSA's chain), in DER bytes.
_TIMESTAMP_TOKEN_BYTES_MAX = 8192
# Signed attributes, the signature value and CMS framing, in DER bytes.
_CMS_OVERHEAD_BYTES = 2048


def reason_for(serial: str) -> str:
    return f"[{serial}] {REASON_SUFFIX}"


def field_name_for(serial: str) -> str:
    return FIELD_PREFIX + serial


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class _LoadedKeySigner(signers.Signer):
    """A pyHanko signer holding an already-parsed private key."""

    def __init__(
        self,
        key: PrivateKey,
        signing_cert: asn1_x509.Certificate,
        cert_registry: SimpleCertificateStore,
    ) -> None:
        super().__init__(signing_cert=signing_cert, cert_registry=cert_registry, embed_roots=True)
        self._key = key

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        return self.sign_raw(data, digest_algorithm)

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        if digest_algorithm != "sha256":
            raise SigningError(f"unexpected digest {digest_algorithm}")
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())


class _HttpxTimeStamper(TimeStamper):
    """RFC 3161 over HTTP with httpx (pyHanko's own clients need aiohttp or requests)."""

    def __init__(self, url: str, timeout_s: float = _TIMESTAMP_TIMEOUT_S) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._url = url
        self._client = httpx.Client(timeout=timeout_s)

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        def post() -> tsp.TimeStampResp:
            try:
                response = self._client.post(
                    self._url, content=req.dump(), headers=set_tsp_headers({})
                )
            except httpx.HTTPError as error:
                raise TimestampRequestError("cannot reach the timestamp authority") from error
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200 or "timestamp-reply" not in content_type:
                raise TimestampRequestError(
                    f"the timestamp authority answered {response.status_code} {content_type}"
                )
            return tsp.TimeStampResp.load(response.content)

        return post()


def _inherited(page: generic.DictionaryObject, key: str) -> Any:
    node: Any = page
    for _ in range(_PAGE_TREE_DEPTH_MAX):
        if key in node:
            return node[key]
        if "/Parent" not in node:
            return None
        node = node["/Parent"]
    raise PdfMalformed("the page tree is too deep or has a cycle")


def _numbers(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as error:
        raise PdfMalformed("a page box is not an array of numbers") from error


def geometry_of(page: generic.DictionaryObject) -> PageGeometry:
    return page_geometry(
        _numbers(_inherited(page, "/MediaBox")),
        _numbers(_inherited(page, "/CropBox")),
        _inherited(page, "/Rotate"),
    )


def _appearance_stream(
    serial: str, verify_url: str, geometry: PageGeometry
) -> generic.StreamObject:
    fonts = generic.DictionaryObject(  # type: ignore[no-untyped-call]
        {
            pdf_name(resource): generic.DictionaryObject(  # type: ignore[no-untyped-call]
                {
                    pdf_name("/Type"): pdf_name("/Font"),
                    pdf_name("/Subtype"): pdf_name("/Type1"),
                    pdf_name("/BaseFont"): pdf_name(base),
                    pdf_name("/Encoding"): pdf_name("/WinAnsiEncoding"),
                }
            )
            for resource, base in FONT_BASE_NAMES.items()
        }
    )
    stream = generic.StreamObject(
        {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Form"),
            pdf_name("/BBox"): generic.ArrayObject(
                [generic.FloatObject(v) for v in (0, 0, STAMP_SIZE_PT, STAMP_SIZE_PT)]  # type: ignore[no-untyped-call]
            ),
            pdf_name("/Matrix"): generic.ArrayObject(
                [generic.FloatObject(v) for v in geometry.appearance_matrix()]  # type: ignore[no-untyped-call]
            ),
            pdf_name("/Resources"): generic.DictionaryObject({pdf_name("/Font"): fonts}),  # type: ignore[no-untyped-call]
            # Lets `find_stamp_pictures` recognise a copied picture of a stamp.
            pdf_name(MARKER_KEY): pdf_string(serial),
        },
        stream_data=appearance_content(serial, verify_url),
    )
    stream.compress()  # type: ignore[no-untyped-call]
    return stream


class StampSigner:
    """Built once per process: loads and keeps the key (reloading per signature costs a lot)."""

    def __init__(self, material: SigningMaterial, *, timestamp_url: str | None = None) -> None:
        signer_cert = _asn1_cert(material.signer_cert_pem)
        root_cert = _asn1_cert(material.root_cert_pem)
        certificates = SimpleCertificateStore.from_certs([root_cert, signer_cert])  # type: ignore[no-untyped-call]
        self._signer: signers.Signer
        if material.token is not None:
            self._signer = _token_signer(material.token, signer_cert, root_cert)
            key_bytes = 72  # ECDSA P-256 on the token
        else:
            key = material.load_private_key()
            self._signer = _LoadedKeySigner(key, signer_cert, certificates)
            key_bytes = key.key_size // 8 if isinstance(key, rsa.RSAPrivateKey) else 72
        self._timestamper: TimeStamper | None = (
            _HttpxTimeStamper(timestamp_url) if timestamp_url else None
        )
        der_bytes = (
            len(signer_cert.dump()) + len(root_cert.dump()) + key_bytes + _CMS_OVERHEAD_BYTES
        )
        if self._timestamper is not None:
            der_bytes += _TIMESTAMP_TOKEN_BYTES_MAX
        # /Contents is hex: two characters a byte.
        self.bytes_reserved = 2 * der_bytes

    def sign(
        self,
        data: bytes,
        *,
        serial: str,
        verify_url: str,
        placement: Placement,
        signed_at: dt.datetime | None = None,
    ) -> bytes:
        if not SERIAL_PATTERN.fullmatch(serial):
            raise InvalidSerial(f"{serial!r} is not 22 characters of 0-9 A-Z")
        try:
            return self._sign(data, serial, verify_url, placement, signed_at)
        except EmeteraiError:
            raise
        except (TimestampRequestError, SigningError) as error:
            raise SigningFailed(f"{type(error).__name__}: {error}") from error
        except _DOCUMENT_ERRORS as error:
            # pikepdf forgave the damage in inspect_pdf, pyHanko's stricter reader did
            # not: the document, not the issuer, is at fault.
            raise PdfMalformed(
                f"the PDF is damaged and cannot be stamped ({type(error).__name__})"
            ) from error
        except Exception as error:
            raise SigningFailed(f"{type(error).__name__}: {error}") from error

    def _sign(
        self,
        data: bytes,
        serial: str,
        verify_url: str,
        placement: Placement,
        signed_at: dt.datetime | None,
    ) -> bytes:
        try:
            writer = IncrementalPdfFileWriter(BytesIO(data), strict=False)
        except (PdfError, ValueError, KeyError, TypeError) as error:
            raise PdfMalformed(str(error)) from error
        if writer.prev.encrypted:
            raise PdfEncrypted()
        certification = read_certification_data(writer.prev)
        if certification is not None and certification.permission == MDPPerm.NO_CHANGES:
            raise PdfLocked()

        page_count = int(writer.root["/Pages"]["/Count"])
        check_page_number(page_count, placement.page)
        try:
            page_ref = writer.find_page_for_modification(placement.page - 1)[0]  # type: ignore[no-untyped-call]
        except (PdfError, IndexError) as error:
            raise PageOutOfRange(f"page {placement.page} cannot be found") from error
        geometry = geometry_of(page_ref.get_object())
        check_fits(geometry.visible, placement)

        name = field_name_for(serial)
        if any(True for _ in fields.enumerate_sig_fields(writer, with_name=name)):
            raise AlreadyStamped(f"the document already has a field {name}")
        fields.append_signature_field(
            writer,
            fields.SigFieldSpec(
                name,
                on_page=placement.page - 1,
                # pyHanko annotates ints but rounds floats itself (fields.SignatureFormField).
                box=cast(Any, geometry.stamp_rect(placement.x_pt, placement.y_pt)),
                empty_field_appearance=False,
            ),
        )
        self._install_appearance(writer, name, serial, verify_url, geometry)

        pdf_signer = signers.PdfSigner(
            signers.PdfSignatureMetadata(
                field_name=name,
                reason=reason_for(serial),
                md_algorithm="sha256",
                subfilter=fields.SigSeedSubFilter.PADES,
            ),
            signer=self._signer,
            timestamper=self._timestamper,
            stamp_style=NoOpStampStyle(),
        )
        return asyncio.run(self._sign_field(pdf_signer, writer, signed_at))

    @staticmethod
    def _install_appearance(
        writer: IncrementalPdfFileWriter,
        name: str,
        serial: str,
        verify_url: str,
        geometry: PageGeometry,
    ) -> None:
        for field_name, _value, field_ref in fields.enumerate_sig_fields(writer):
            if field_name == name:
                widget = field_ref.get_object()
                break
        else:
            raise SigningFailed("the new signature field vanished")
        stream = _appearance_stream(serial, verify_url, geometry)
        placeholder = widget["/AP"].raw_get("/N")
        # Reuse the empty placeholder's object number instead of leaving it orphaned.
        writer.objects[(placeholder.generation, placeholder.idnum)] = stream

    async def _sign_field(
        self,
        pdf_signer: signers.PdfSigner,
        writer: IncrementalPdfFileWriter,
        signed_at: dt.datetime | None,
    ) -> bytes:
        session = pdf_signer.init_signing_session(writer, existing_fields_only=True)
        if signed_at is not None:
            session.system_time = signed_at
        # No validation context: nothing to fetch or embed before signing (B-B / B-T).
        tbs = session.prepare_tbs_document(validation_info=None, bytes_reserved=self.bytes_reserved)
        buffer = BytesIO()
        prepared, output = tbs.digest_tbs_document(output=buffer)
        post = await tbs.perform_signature(
            document_digest=prepared.document_digest,
            pdf_cms_signed_attrs=PdfCMSSignedAttributes(signing_time=session.system_time),
        )
        await post.post_signature_processing(output)
        return buffer.getvalue()


def _token_signer(
    token: TokenKey, signer_cert: asn1_x509.Certificate, root_cert: asn1_x509.Certificate
) -> signers.Signer:
    """pyHanko's PKCS#11 signer, on a session this process keeps open."""
    from pyhanko.config.pkcs11 import TokenCriteria
    from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session

    try:
        session = open_pkcs11_session(
            token.module_path,
            token_criteria=TokenCriteria(label=token.token_label),
            user_pin=token.pin,
        )
    except Exception as error:
        raise SigningFailed(
            f"the PKCS#11 token {token.token_label!r} cannot be opened ({type(error).__name__})"
        ) from error
    return PKCS11Signer(
        session,
        key_label=token.key_label,
        signing_cert=signer_cert,
        ca_chain=[root_cert],
        # Hash here, sign the digest with plain CKM_ECDSA: every HSM (and SoftHSM2) has it,
        # while CKM_ECDSA_SHA256 is optional.
        use_raw_mechanism=True,
    )


# What pyHanko raises while walking a damaged object graph.
_DOCUMENT_ERRORS = (
    PdfError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    AttributeError,
    RecursionError,
    UnicodeError,
)


def _asn1_cert(pem: bytes) -> asn1_x509.Certificate:
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return asn1_x509.Certificate.load(der)


__all__ = ["StampSigner", "field_name_for", "reason_for"]
