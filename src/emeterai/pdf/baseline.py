"""Plain pyHanko signing "as documented": the benchmark's baseline, never the product path.

Everything the tuned `StampSigner` avoids happens here on every call: the key and
certificates are parsed again, pyHanko sizes the signature with a dry-run signature
(no `bytes_reserved`), and its QR stamp style lets the QR library search for a mask.
"""

from __future__ import annotations

import importlib.util
from io import BytesIO
from typing import Any, cast

from pyhanko.keys import load_certs_from_pemder_data, load_private_key_from_pemder_data
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.stamp import QRStampStyle, TextStampStyle
from pyhanko_certvalidator.registry import SimpleCertificateStore

from emeterai.pdf.geometry import Placement
from emeterai.pdf.sign import geometry_of
from emeterai.pki import SigningMaterial

BASELINE_FIELD_NAME = "Signature-baseline"
BASELINE_URL = "http://127.0.0.1:8000/v/baseline"


def _stamp_style() -> TextStampStyle:
    """pyHanko's QR stamp needs the optional `qrcode` package (the product uses segno);
    without it the baseline falls back to the text stamp, which is a little cheaper."""
    if importlib.util.find_spec("qrcode") is None:
        return TextStampStyle()
    return QRStampStyle()


def sign_plain_pyhanko(data: bytes, material: SigningMaterial, placement: Placement) -> bytes:
    (signer_cert,) = load_certs_from_pemder_data(material.signer_cert_pem)
    (root_cert,) = load_certs_from_pemder_data(material.root_cert_pem)
    signer = signers.SimpleSigner(
        signing_cert=signer_cert,
        signing_key=load_private_key_from_pemder_data(material.signer_key_pem, material.passphrase),
        cert_registry=SimpleCertificateStore.from_certs([root_cert]),  # type: ignore[no-untyped-call]
    )
    writer = IncrementalPdfFileWriter(BytesIO(data), strict=False)
    page_ref = writer.find_page_for_modification(placement.page - 1)[0]  # type: ignore[no-untyped-call]
    rect = geometry_of(page_ref.get_object()).stamp_rect(placement.x_pt, placement.y_pt)
    pdf_signer = signers.PdfSigner(
        signers.PdfSignatureMetadata(
            field_name=BASELINE_FIELD_NAME,
            md_algorithm="sha256",
            subfilter=fields.SigSeedSubFilter.PADES,
        ),
        signer=signer,
        stamp_style=_stamp_style(),
        new_field_spec=fields.SigFieldSpec(
            BASELINE_FIELD_NAME, on_page=placement.page - 1, box=cast(Any, rect)
        ),
    )
    output = pdf_signer.sign_pdf(writer, appearance_text_params={"url": BASELINE_URL})
    return bytes(output.getvalue())
