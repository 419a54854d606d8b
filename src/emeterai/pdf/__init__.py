"""PDF: the only package that imports pyHanko and pikepdf.

- `inspect_pdf` / `check_placement`: fast admission checks (pikepdf).
- `StampSigner`: the visible stamp plus its PAdES signature, in one incremental update.
- `examine_signatures` / `find_stamp_pictures`: evidence for the verifier.
"""

from __future__ import annotations

from emeterai.pdf.examine import SignatureReport, examine_signatures, find_stamp_pictures
from emeterai.pdf.geometry import STAMP_SIZE_PT, PageBox, Placement
from emeterai.pdf.inspect import PdfFacts, check_placement, inspect_pdf
from emeterai.pdf.sign import StampSigner

__all__ = [
    "STAMP_SIZE_PT",
    "PageBox",
    "PdfFacts",
    "Placement",
    "SignatureReport",
    "StampSigner",
    "check_placement",
    "examine_signatures",
    "find_stamp_pictures",
    "inspect_pdf",
]
