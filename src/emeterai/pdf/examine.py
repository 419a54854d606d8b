"""Evidence for the verifier: every embedded signature, and stamp pictures without one.

Nothing here decides a verdict; `verify/` does. A broken signature is a report with
`intact=False`, never an exception: hostile input is the normal case for a verifier.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pikepdf
from pyhanko.keys import load_certs_from_pemder_data
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.validation import validate_pdf_signature, validate_pdf_timestamp
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from emeterai.errors import NotAPdf, PdfEncrypted, PdfMalformed
from emeterai.pdf.appearance import MARKER_KEY, TITLE
from emeterai.pdf.inspect import HEADER_SEARCH_BYTES, iter_fields, open_pdf, serial_from_reason

_SIGNATURES_MAX = 64
_PAGES_SCANNED_MAX = 2_000
_OBJECTS_VISITED_MAX = 20_000
_CONTENT_BYTES_SCANNED_MAX = 64 * 1024 * 1024
_XOBJECT_DEPTH_MAX = 8
_PAGE_TREE_NODES_MAX = 200_000

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignatureReport:
    field_name: str
    reason: str | None
    serial: str | None  # the [..] prefix of reason, if 22 characters of 0-9 A-Z
    intact: bool  # the digest matches
    valid: bool  # the signature is cryptographically valid
    trusted: bool  # the signer chains to one of the given trust roots, today
    modification_ok: bool  # nothing after it beyond form filling or more signatures
    modification_level: str  # "NONE", "LTA_UPDATES", "FORM_FILLING", "ANNOTATIONS", "OTHER"
    covers_whole_file: bool
    signed_at: dt.datetime | None  # timestamp token time if any, else signer-reported
    signer_subject: str
    revision_sha256: str  # SHA-256 of the file exactly as it was when signed
    page: int | None  # 1-based page of the widget, if found
    # Form fields added or filled in after this signature (pyHanko's difference analysis).
    changed_fields: tuple[str, ...] = ()
    visible: bool = True  # the widget has an area on the page: it can draw
    # Not trusted today, but trusted at `signed_at` (the certificate has since expired).
    trusted_when_signed: bool = False


def _open_reader(data: bytes) -> PdfFileReader:
    if b"%PDF-" not in data[:HEADER_SEARCH_BYTES]:
        raise NotAPdf()
    try:
        reader = PdfFileReader(BytesIO(data), strict=False)
    except (PdfError, ValueError, KeyError, TypeError, IndexError) as error:
        raise PdfMalformed(str(error)) from error
    if reader.encrypted:
        raise PdfEncrypted()
    return reader


def _validation_context(
    trust_roots_pem: Sequence[bytes], *, moment: dt.datetime | None = None
) -> ValidationContext:
    roots = [cert for pem in trust_roots_pem for cert in load_certs_from_pemder_data(pem)]
    # Offline and without revocation checks: the issuer's own chain, no network.
    return ValidationContext(
        trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail", moment=moment
    )


def _page_index(reader: PdfFileReader) -> dict[int, int]:
    """Page object number -> 1-based page number, from a bounded walk of the tree."""
    index: dict[int, int] = {}
    stack: list[Any] = [reader.root.raw_get("/Pages")]
    seen: set[int] = set()
    steps = 0
    while stack and steps < _PAGE_TREE_NODES_MAX:
        steps += 1
        ref = stack.pop()
        if isinstance(ref, generic.IndirectObject):
            if ref.idnum in seen:
                continue
            seen.add(ref.idnum)
        node = ref.get_object() if isinstance(ref, generic.IndirectObject) else ref  # type: ignore[no-untyped-call]
        if not isinstance(node, generic.DictionaryObject):
            continue
        kids = node.get("/Kids")
        if isinstance(kids, generic.ArrayObject):
            stack.extend(reversed(list(kids.raw_get(i) for i in range(len(kids)))))
        elif isinstance(ref, generic.IndirectObject):
            index[ref.idnum] = len(index) + 1
    return index


def _widget_page(field: generic.DictionaryObject, pages: dict[int, int]) -> int | None:
    widget: Any = field
    if "/Subtype" not in field and isinstance(field.get("/Kids"), generic.ArrayObject):
        widget = field["/Kids"][0]
    page_ref = widget.raw_get("/P") if "/P" in widget else None
    if isinstance(page_ref, generic.IndirectObject):
        return pages.get(page_ref.idnum)
    return None


def _widget_visible(field: generic.DictionaryObject) -> bool:
    widget: Any = field
    if "/Rect" not in field and isinstance(field.get("/Kids"), generic.ArrayObject):
        widget = field["/Kids"][0]
    try:
        x1, y1, x2, y2 = (float(value) for value in widget["/Rect"])
    except (KeyError, TypeError, ValueError):
        return False
    return abs(x2 - x1) > 0 and abs(y2 - y1) > 0


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _level_name(level: ModificationLevel | None) -> str:
    return "UNKNOWN" if level is None else str(level.name)


def _signed_revision_sha256(data: bytes, byte_range: Any) -> str:
    try:
        values = [int(v) for v in byte_range]
        end = values[2] + values[3]
    except (TypeError, ValueError, IndexError):
        return ""
    if len(values) != 4 or not 0 < end <= len(data):
        return ""
    return hashlib.sha256(data[:end]).hexdigest()


def _broken_report(name: str, sig_object: Any, data: bytes, page: int | None) -> SignatureReport:
    reason = None
    byte_range: Any = None
    if isinstance(sig_object, generic.DictionaryObject):
        reason = _text(sig_object.get("/Reason"))
        byte_range = sig_object.get("/ByteRange")
    return SignatureReport(
        field_name=name,
        reason=reason,
        serial=serial_from_reason(reason),
        intact=False,
        valid=False,
        trusted=False,
        modification_ok=False,
        modification_level="UNKNOWN",
        covers_whole_file=False,
        signed_at=None,
        signer_subject="",
        revision_sha256=_signed_revision_sha256(data, byte_range),
        page=page,
    )


def _trusted_when_signed(
    embedded: EmbeddedPdfSignature, trust_roots_pem: Sequence[bytes], signed_at: dt.datetime
) -> bool:
    """Would the chain hold at the time the signature claims? Only the registry can then
    vouch for that time (verify/ checks the revision is the one registered)."""
    try:
        context = _validation_context(trust_roots_pem, moment=signed_at)
        return bool(validate_pdf_signature(embedded, signer_validation_context=context).trusted)
    except Exception:  # hostile input: any failure means "no"
        return False


def _report(
    embedded: EmbeddedPdfSignature,
    context: ValidationContext,
    data: bytes,
    page: int | None,
    trust_roots_pem: Sequence[bytes],
) -> SignatureReport:
    sig_object = embedded.sig_object
    reason = _text(sig_object.get("/Reason"))
    signed_at: dt.datetime | None
    if embedded.sig_object_type == "/DocTimeStamp":
        ts_status = validate_pdf_timestamp(embedded, validation_context=context)
        status: Any = ts_status
        signed_at = ts_status.timestamp
        docmdp_ok = True
    else:
        sig_status = validate_pdf_signature(embedded, signer_validation_context=context)
        status = sig_status
        timestamp = sig_status.timestamp_validity
        signed_at = timestamp.timestamp if timestamp is not None else sig_status.signer_reported_dt
        docmdp_ok = bool(sig_status.docmdp_ok)
    level: ModificationLevel | None = status.modification_level
    diff = getattr(status, "diff_result", None)
    changed = tuple(sorted(getattr(diff, "changed_form_fields", ()) or ()))
    return SignatureReport(
        field_name=embedded.field_name,
        reason=reason,
        serial=serial_from_reason(reason),
        intact=bool(status.intact),
        valid=bool(status.valid),
        trusted=bool(status.trusted),
        modification_ok=(
            level is not None and level <= ModificationLevel.FORM_FILLING and docmdp_ok
        ),
        modification_level=_level_name(level),
        covers_whole_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
        signed_at=signed_at,
        signer_subject=str(status.signing_cert.subject.human_friendly),
        revision_sha256=_signed_revision_sha256(data, embedded.byte_range),
        page=page,
        changed_fields=changed,
        visible=_widget_visible(embedded.sig_field),
        trusted_when_signed=(
            not status.trusted
            and bool(status.valid)
            and signed_at is not None
            and _trusted_when_signed(embedded, trust_roots_pem, signed_at)
        ),
    )


def examine_signatures(
    data: bytes, trust_roots_pem: Sequence[bytes], *, now: dt.datetime | None = None
) -> tuple[SignatureReport, ...]:
    """Validate every embedded signature (offline, trusting only `trust_roots_pem`), as
    of `now` (default: the system clock)."""
    reader = _open_reader(data)
    try:
        filled = list(enumerate_sig_fields(reader, filled_status=True))[:_SIGNATURES_MAX]
        pages = _page_index(reader)
    except (PdfError, ValueError, KeyError, TypeError, IndexError) as error:
        raise PdfMalformed(str(error)) from error
    context = _validation_context(trust_roots_pem, moment=now)
    reports: list[tuple[int, SignatureReport]] = []
    for position, (name, sig_ref, field_ref) in enumerate(filled):
        field = (
            field_ref.get_object() if isinstance(field_ref, generic.IndirectObject) else field_ref  # type: ignore[no-untyped-call]
        )
        page = None
        sig_object: Any = None
        try:
            page = _widget_page(field, pages)
            sig_object = sig_ref.get_object() if sig_ref is not None else None
            embedded = EmbeddedPdfSignature(reader, field, name)
            order = int(embedded.signed_revision)
            reports.append((order, _report(embedded, context, data, page, trust_roots_pem)))
        except Exception as error:  # hostile input: any failure means "not valid"
            _logger.info("signature %s cannot be validated: %r", name, error)
            reports.append((10**9 + position, _broken_report(name, sig_object, data, page)))
    reports.sort(key=lambda item: item[0])
    return tuple(report for _, report in reports)


# --- Stamp pictures without a signature ------------------------------------------------


@dataclass
class _Budget:
    objects: int = _OBJECTS_VISITED_MAX
    content_bytes: int = _CONTENT_BYTES_SCANNED_MAX

    def spend_object(self) -> bool:
        self.objects -= 1
        return self.objects >= 0

    def read(self, stream: pikepdf.Stream) -> bytes:
        """The decoded stream, never more than the budget: a 500 KB upload can hide
        gigabytes of zeros in one Flate stream, so nothing is decoded unbounded."""
        if self.content_bytes <= 0:
            return b""
        try:
            raw = stream.read_raw_bytes()
            filters = stream.get("/Filter")
        except pikepdf.PdfError:
            return b""
        if isinstance(filters, pikepdf.Array):
            filters = filters[0] if len(filters) == 1 else pikepdf.Name("/Unsupported")
        if filters is None:
            data = raw[: self.content_bytes]
        elif filters == pikepdf.Name.FlateDecode:
            try:
                data = zlib.decompressobj().decompress(raw, self.content_bytes)
            except zlib.error:
                return b""
        else:
            return b""  # page content is Flate or plain; images and the rest say nothing here
        self.content_bytes -= max(len(data), 1)
        return data


def _signed_field_objects(pdf: pikepdf.Pdf) -> set[tuple[int, int]]:
    """Widgets of signature fields that carry a signature value (/V)."""
    backed: set[tuple[int, int]] = set()
    for _name, field in iter_fields(pdf):
        if field.get("/V") is None or not field.is_indirect:
            continue
        backed.add(field.objgen)
        kids = field.get("/Kids")
        if isinstance(kids, pikepdf.Array):
            backed.update(kid.objgen for kid in kids if kid.is_indirect)
    return backed


def _scan_xobject(
    stream: Any, where: str, budget: _Budget, depth: int, seen: set[tuple[int, int]]
) -> Iterator[str]:
    if not isinstance(stream, pikepdf.Stream) or depth > _XOBJECT_DEPTH_MAX:
        return
    if stream.is_indirect:
        if stream.objgen in seen:
            return
        seen.add(stream.objgen)
    if not budget.spend_object() or stream.get("/Subtype") != pikepdf.Name.Form:
        return
    marker = stream.get(MARKER_KEY)
    if marker is not None:
        yield f"{where}: form XObject marked {MARKER_KEY} {marker}"
    if TITLE.encode() in budget.read(stream):
        yield f"{where}: form XObject text '{TITLE}'"
    yield from _scan_resources(stream.get("/Resources"), where, budget, depth + 1, seen)


def _scan_resources(
    resources: Any, where: str, budget: _Budget, depth: int, seen: set[tuple[int, int]]
) -> Iterator[str]:
    if not isinstance(resources, pikepdf.Dictionary):
        return
    xobjects = resources.get("/XObject")
    if not isinstance(xobjects, pikepdf.Dictionary):
        return
    for key in list(xobjects.keys()):
        yield from _scan_xobject(xobjects.get(key), where, budget, depth, seen)


def _page_contents(page: pikepdf.Page) -> list[pikepdf.Stream]:
    contents = page.obj.get("/Contents")
    if isinstance(contents, pikepdf.Stream):
        return [contents]
    if isinstance(contents, pikepdf.Array):
        return [item for item in contents if isinstance(item, pikepdf.Stream)]
    return []


def _scan_page(
    page: pikepdf.Page,
    number: int,
    backed: set[tuple[int, int]],
    budget: _Budget,
    seen: set[tuple[int, int]],
) -> Iterator[str]:
    where = f"page {number}"
    for stream in _page_contents(page):
        if TITLE.encode() in budget.read(stream):
            yield f"{where} text '{TITLE}'"
            break
    yield from _scan_resources(page.obj.get("/Resources"), where, budget, 0, seen)
    annotations = page.obj.get("/Annots")
    if not isinstance(annotations, pikepdf.Array):
        return
    for annotation in annotations:
        if not isinstance(annotation, pikepdf.Dictionary) or not budget.spend_object():
            continue
        if annotation.is_indirect and annotation.objgen in backed:
            continue  # a signed widget: `examine_signatures` judges it
        appearance = annotation.get("/AP")
        normal = appearance.get("/N") if isinstance(appearance, pikepdf.Dictionary) else None
        candidates: list[Any] = []
        if isinstance(normal, pikepdf.Stream):
            candidates.append(normal)
        elif isinstance(normal, pikepdf.Dictionary):
            candidates.extend(normal.get(key) for key in list(normal.keys()))
        for candidate in candidates:
            yield from _scan_xobject(candidate, f"{where} annotation", budget, 0, seen)


def find_stamp_pictures(data: bytes) -> tuple[str, ...]:
    """Descriptions of e-Meterai pictures that no signature backs (a pasted stamp).

    The work is bounded: at most a few thousand pages, objects and 64 MB of content.
    """
    pdf = open_pdf(data)
    try:
        backed = _signed_field_objects(pdf)
        budget = _Budget()
        seen: set[tuple[int, int]] = set()
        found: list[str] = []
        for number, page in enumerate(pdf.pages, start=1):
            if number > _PAGES_SCANNED_MAX or budget.objects <= 0:
                break
            for description in _scan_page(page, number, backed, budget, seen):
                if description not in found:
                    found.append(description)
        return tuple(found)
    except (pikepdf.PdfError, RuntimeError) as error:
        raise PdfMalformed(str(error)) from error
    finally:
        pdf.close()
