"""What a forger does to a stamped PDF, made in code so every verdict has a real test."""

from __future__ import annotations

import io
import re

import pikepdf
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers

from emeterai.pdf import Placement, StampSigner
from emeterai.pki import SigningMaterial


def signed_range_end(data: bytes) -> int:
    """The end of the last signature's first signed range: where its /Contents begins."""
    ranges = re.findall(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", data)
    if not ranges:
        raise ValueError("no signature in this document")
    return int(ranges[-1][1])


def flip_byte_in_signed_range(data: bytes) -> bytes:
    """Change one byte of stream data inside the signed range, keeping the file readable."""
    end = signed_range_end(data)
    position = data.find(b"stream", data.find(b"obj")) + len(b"stream\n") + 8
    if not 0 < position < end:
        raise ValueError("no stream inside the signed range")
    mutable = bytearray(data)
    mutable[position] = mutable[position] ^ 0x01
    return bytes(mutable)


def append_content_update(data: bytes, page_index: int = 0) -> bytes:
    """An incremental update after the stamp that draws over the page: a content change."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    stream = generic.StreamObject(stream_data=b"q 1 0 0 rg 72 400 300 60 re f Q\n")
    writer.add_stream_to_page(page_index, writer.add_object(stream))
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def paste_stamp_picture(stamped: bytes, target: bytes) -> bytes:
    """Copy the stamp's appearance (the picture, not the signature) into another PDF."""
    with pikepdf.open(io.BytesIO(stamped)) as source, pikepdf.open(io.BytesIO(target)) as pdf:
        appearance = None
        for page in source.pages:
            for annotation in page.obj.get("/Annots", pikepdf.Array()):
                if annotation.get("/FT") == "/Sig" or "/AP" in annotation:
                    appearance = annotation.AP.N
                    break
            if appearance is not None:
                break
        if appearance is None:
            raise ValueError("no stamp appearance found")
        copied = pdf.copy_foreign(appearance)
        page = pdf.pages[0]
        page.add_resource(copied, pikepdf.Name.XObject, pikepdf.Name("/Pasted"))
        page.contents_add(pdf.make_stream(b"q 1 0 0 1 400 60 cm /Pasted Do Q\n"), prepend=False)
        output = io.BytesIO()
        pdf.save(output)
        return output.getvalue()


def sign_with(material: SigningMaterial, data: bytes, serial: str, verify_url: str) -> bytes:
    """A stamp made straight with some key, outside the registry (forgeries, reuse)."""
    placement = Placement(page=1, x_pt=72.0, y_pt=72.0)
    return StampSigner(material).sign(
        data, serial=serial, verify_url=verify_url, placement=placement
    )


def sign_as_other_party(
    data: bytes,
    material: SigningMaterial,
    *,
    field_name: str = "PartyA",
    box: tuple[int, int, int, int] | None = None,
) -> bytes:
    """A party's signature: invisible by default, or with a visible box that can draw
    anything over the page (what a forger does after the stamp)."""
    from pyhanko.sign import fields

    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    meta = signers.PdfSignatureMetadata(field_name=field_name, reason="I agree to this contract")
    spec = fields.SigFieldSpec(field_name, on_page=0, box=box) if box else None
    output = signers.sign_pdf(writer, meta, signer=_simple_signer(material), new_field_spec=spec)
    return bytes(output.getvalue())


def _simple_signer(material: SigningMaterial) -> signers.SimpleSigner:
    from asn1crypto import keys, pem, x509
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )

    key = load_pem_private_key(material.signer_key_pem, material.passphrase)
    key_der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    _, _, cert_der = pem.unarmor(material.signer_cert_pem)
    return signers.SimpleSigner(
        signing_cert=x509.Certificate.load(cert_der),
        signing_key=keys.PrivateKeyInfo.load(key_der),
        cert_registry=None,
    )
