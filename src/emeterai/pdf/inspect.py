"""Fast admission checks with pikepdf (qpdf): what is this PDF, and may we stamp it?"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pikepdf

from emeterai.errors import NotAPdf, PdfEncrypted, PdfMalformed, PdfTooManyPages
from emeterai.pdf.geometry import (
    PageBox,
    PageGeometry,
    Placement,
    check_fits,
    check_page_number,
    page_geometry,
)

HEADER_SEARCH_BYTES = 1024
_SERIAL_REASON = re.compile(r"^\[([0-9A-Z]{22})\]")
_STAMP_FIELD_PREFIX = "eMeterai"
_FIELDS_MAX = 10_000
_FIELD_DEPTH_MAX = 32
_PAGE_TREE_DEPTH_MAX = 64
# qpdf's words for a file whose cross-reference data is lost (cut short, overwritten):
# the objects it "recovers" are a guess, and an incremental update on top would be too.
_DAMAGE_WARNINGS = ("file is damaged", "reconstruct", "unable to find trailer")


@dataclass(frozen=True)
class PdfFacts:
    page_count: int
    version: str
    pages: tuple[PageBox, ...]
    stamp_serials: tuple[str, ...]
    certified_no_changes: bool


def serial_from_reason(reason: str | None) -> str | None:
    if not reason:
        return None
    match = _SERIAL_REASON.match(reason)
    return match.group(1) if match else None


def open_pdf(data: bytes) -> pikepdf.Pdf:
    """Open with pikepdf, mapping every failure to our error tree."""
    if b"%PDF-" not in data[:HEADER_SEARCH_BYTES]:
        raise NotAPdf()
    try:
        pdf = pikepdf.open(BytesIO(data))
    except pikepdf.PasswordError as error:
        raise PdfEncrypted() from error
    except (pikepdf.PdfError, RuntimeError, ValueError) as error:
        raise PdfMalformed(str(error)) from error
    if pdf.is_encrypted:
        # Opens with an empty user password, but we cannot stamp it without rewriting.
        pdf.close()
        raise PdfEncrypted()
    _raise_if_damaged(pdf)
    return pdf


def _raise_if_damaged(pdf: pikepdf.Pdf) -> None:
    for warning in pdf.get_warnings():
        text = str(warning)
        if any(word in text for word in _DAMAGE_WARNINGS):
            pdf.close()
            raise PdfMalformed("the PDF is damaged (its cross-reference table is missing)")


def _inherited(page: pikepdf.Dictionary, key: str) -> Any:
    node: Any = page
    for _ in range(_PAGE_TREE_DEPTH_MAX):
        value = node.get(key)
        if value is not None:
            return value
        node = node.get("/Parent")
        if node is None:
            return None
    raise PdfMalformed("the page tree is too deep or has a cycle")


def _numbers(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as error:
        raise PdfMalformed("a page box is not an array of numbers") from error


def geometry_of(page: pikepdf.Dictionary) -> PageGeometry:
    return page_geometry(
        _numbers(_inherited(page, "/MediaBox")),
        _numbers(_inherited(page, "/CropBox")),
        _inherited(page, "/Rotate"),
    )


def iter_fields(pdf: pikepdf.Pdf) -> Iterator[tuple[str, pikepdf.Dictionary]]:
    """Terminal AcroForm fields with their full names, bounded, cycle-safe."""
    acroform = pdf.Root.get("/AcroForm")
    if not isinstance(acroform, pikepdf.Dictionary):
        return
    roots = acroform.get("/Fields")
    if not isinstance(roots, pikepdf.Array):
        return
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, Any, int]] = [("", field, 0) for field in reversed(list(roots))]
    visited = 0
    while stack and visited < _FIELDS_MAX:
        prefix, field, depth = stack.pop()
        visited += 1
        if not isinstance(field, pikepdf.Dictionary):
            continue
        if field.is_indirect:
            if field.objgen in seen:
                continue
            seen.add(field.objgen)
        partial = field.get("/T")
        name = prefix
        if partial is not None:
            name = f"{prefix}.{partial}" if prefix else str(partial)
        kids = field.get("/Kids")
        child_fields = (
            [kid for kid in kids if isinstance(kid, pikepdf.Dictionary) and "/T" in kid]
            if isinstance(kids, pikepdf.Array)
            else []
        )
        if child_fields and depth < _FIELD_DEPTH_MAX:
            stack.extend((name, kid, depth + 1) for kid in reversed(child_fields))
        else:
            yield name, field


def _field_type(field: pikepdf.Dictionary) -> Any:
    node: Any = field
    for _ in range(_FIELD_DEPTH_MAX):
        value = node.get("/FT")
        if value is not None:
            return value
        node = node.get("/Parent")
        if not isinstance(node, pikepdf.Dictionary):
            return None
    return None


def stamp_serials_in(pdf: pikepdf.Pdf) -> tuple[str, ...]:
    serials: list[str] = []
    for name, field in iter_fields(pdf):
        if _field_type(field) != pikepdf.Name.Sig:
            continue
        value = field.get("/V")
        reason = value.get("/Reason") if isinstance(value, pikepdf.Dictionary) else None
        serial = serial_from_reason(str(reason)) if reason is not None else None
        if serial is None and name.startswith(_STAMP_FIELD_PREFIX):
            # Our field name is "eMeterai-SERIAL"; anything else named so still counts.
            serial = name[len(_STAMP_FIELD_PREFIX) :].lstrip("-") or name
        if serial is not None and serial not in serials:
            serials.append(serial)
    return tuple(serials)


def certified_no_changes(pdf: pikepdf.Pdf) -> bool:
    perms = pdf.Root.get("/Perms")
    if not isinstance(perms, pikepdf.Dictionary):
        return False
    signature = perms.get("/DocMDP")
    if not isinstance(signature, pikepdf.Dictionary):
        return False
    references = signature.get("/Reference")
    if not isinstance(references, pikepdf.Array):
        return False
    for reference in references:
        if not isinstance(reference, pikepdf.Dictionary):
            continue
        if reference.get("/TransformMethod") != pikepdf.Name.DocMDP:
            continue
        params = reference.get("/TransformParams")
        permission = params.get("/P", 2) if isinstance(params, pikepdf.Dictionary) else 2
        if int(permission) == 1:
            return True
    return False


def _version(pdf: pikepdf.Pdf) -> str:
    header = pdf.pdf_version
    catalog = pdf.Root.get("/Version")
    if catalog is not None:
        declared = str(catalog).lstrip("/")
        if re.fullmatch(r"\d\.\d", declared) and declared > header:
            return declared
    return str(header)


def inspect_pdf(data: bytes, *, pages_max: int) -> PdfFacts:
    pdf = open_pdf(data)
    try:
        try:
            page_count = len(pdf.pages)
            if page_count > pages_max:
                raise PdfTooManyPages(
                    f"the PDF has {page_count} pages; the limit is {pages_max}",
                    pages_max=pages_max,
                )
            if page_count == 0:
                raise PdfMalformed("the PDF has no pages")
            pages = tuple(geometry_of(page.obj).visible for page in pdf.pages)
            facts = PdfFacts(
                page_count=page_count,
                version=_version(pdf),
                pages=pages,
                stamp_serials=stamp_serials_in(pdf),
                certified_no_changes=certified_no_changes(pdf),
            )
        except (pikepdf.PdfError, RuntimeError) as error:
            raise PdfMalformed(str(error)) from error
        _raise_if_damaged(pdf)
        return facts
    finally:
        pdf.close()


def check_placement(facts: PdfFacts, placement: Placement) -> None:
    check_page_number(facts.page_count, placement.page)
    check_fits(facts.pages[placement.page - 1], placement)
