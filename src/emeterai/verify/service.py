"""Verification: DESIGN.md flow 3. Needs no account and no quota.

The outcome is a frozen value, never an exception: a forged document is a normal answer.
Signatures are judged first (bytes, cryptography, trust, later changes), then the
registry (is the serial ours, still valid, and bound to exactly this document).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emeterai.errors import PdfMalformed, PdfTooLarge
from emeterai.pdf import SignatureReport, examine_signatures, find_stamp_pictures
from emeterai.serials import Serial, is_well_formed, normalise_serial
from emeterai.stamping.models import Stamp

__all__ = [
    "EXIT_CODES",
    "SerialStatus",
    "StampFinding",
    "Verdict",
    "Verification",
    "serial_status",
    "verify_document",
]


class Verdict(StrEnum):
    GENUINE = "GENUINE"
    TAMPERED = "TAMPERED"
    FORGED = "FORGED"
    UNKNOWN_SERIAL = "UNKNOWN_SERIAL"
    REUSED = "REUSED"
    REVOKED = "REVOKED"
    NOT_STAMPED = "NOT_STAMPED"


# The CLI's exit codes: 0 only for GENUINE, one distinct code for every other verdict.
EXIT_CODES: dict[Verdict, int] = {
    Verdict.GENUINE: 0,
    Verdict.TAMPERED: 10,
    Verdict.FORGED: 11,
    Verdict.UNKNOWN_SERIAL: 12,
    Verdict.REUSED: 13,
    Verdict.REVOKED: 14,
    Verdict.NOT_STAMPED: 15,
}

# When a document carries several stamps, the worst one decides.
_SEVERITY = [
    Verdict.TAMPERED,
    Verdict.FORGED,
    Verdict.REVOKED,
    Verdict.REUSED,
    Verdict.UNKNOWN_SERIAL,
    Verdict.NOT_STAMPED,
    Verdict.GENUINE,
]


@dataclass(frozen=True)
class StampFinding:
    serial: str | None
    verdict: Verdict
    reasons: tuple[str, ...]
    signed_at: datetime | None
    page: int | None
    signer: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
            "page": self.page,
            "signer": self.signer,
        }


@dataclass(frozen=True)
class Verification:
    verdict: Verdict
    serial: str | None
    reasons: tuple[str, ...]
    signed_at: datetime | None
    document_sha256: str
    stamps: tuple[StampFinding, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "serial": self.serial,
            "reasons": list(self.reasons),
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
            "document_sha256": self.document_sha256,
            "stamps": [stamp.as_dict() for stamp in self.stamps],
        }


@dataclass(frozen=True)
class SerialStatus:
    serial: str
    state: str
    stamped_at: datetime | None
    document_sha256: str | None
    revoked_at: datetime | None
    revoked_reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "state": self.state,
            "stamped_at": self.stamped_at.isoformat() if self.stamped_at else None,
            "document_sha256": self.document_sha256,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked_reason": self.revoked_reason,
        }


def _is_ours(report: SignatureReport) -> bool:
    return report.serial is not None or report.field_name.startswith("eMeterai")


def _judge_signature(report: SignatureReport) -> tuple[Verdict, str] | None:
    """The verdict the signature alone forces, or None if it holds."""
    if not report.intact:
        return Verdict.TAMPERED, "the document's bytes changed after it was stamped"
    if not report.valid:
        return Verdict.FORGED, "the stamp's signature is not a valid signature"
    if not report.trusted and not report.trusted_when_signed:
        return (
            Verdict.FORGED,
            f"the stamp is signed by a key the issuer does not trust ({report.signer_subject})",
        )
    if report.serial is None or not is_well_formed(report.serial):
        return Verdict.FORGED, "the stamp's serial is not a well-formed e-Meterai serial"
    if not report.modification_ok:
        return (
            Verdict.TAMPERED,
            f"the document was changed after it was stamped ({report.modification_level})",
        )
    return None


def _judge_registry(session: Session, report: SignatureReport) -> tuple[Verdict, str]:
    serial = report.serial or ""
    row = session.get(Serial, serial)
    if row is None or row.state not in ("used", "revoked"):
        return Verdict.UNKNOWN_SERIAL, f"serial {serial} was never issued"
    if row.state == "revoked":
        return Verdict.REVOKED, f"serial {serial} was revoked: {row.revoked_reason}"
    stamp = session.scalars(select(Stamp).where(Stamp.serial == serial)).first()
    if stamp is None or stamp.document_sha256 != report.revision_sha256:
        if not report.trusted:
            # An expired certificate is only believed for the exact registered revision.
            return Verdict.FORGED, f"serial {serial} is signed with an expired certificate"
        return Verdict.REUSED, f"serial {serial} belongs to a different document"
    if not report.trusted:
        return (
            Verdict.GENUINE,
            f"serial {serial} is genuine and bound to this document; its certificate has since"
            f" expired, and the registry confirms it was stamped on {stamp.signed_at:%Y-%m-%d}",
        )
    return Verdict.GENUINE, f"serial {serial} is genuine and bound to this document"


def _judge_later_changes(
    report: SignatureReport, reports: Sequence[SignatureReport]
) -> tuple[Verdict, str] | None:
    """After a stamp, only our own later stamps and invisible signatures may change the
    document: anything else could draw over the page the stamp vouches for."""
    harmless = {other.field_name for other in reports if _is_ours(other) or not other.visible}
    others = sorted(set(report.changed_fields) - harmless)
    if not others:
        return None
    return (
        Verdict.TAMPERED,
        "after it was stamped, the document gained or changed "
        + ", ".join(others[:5])
        + "; the e-Meterai covers the document only as it was before",
    )


def _finding(
    session: Session, report: SignatureReport, reports: Sequence[SignatureReport]
) -> StampFinding:
    judged = (
        _judge_signature(report)
        or _judge_later_changes(report, reports)
        or _judge_registry(session, report)
    )
    verdict, reason = judged
    reasons = [reason]
    if verdict is Verdict.GENUINE and report.modification_level not in ("NONE", ""):
        reasons.append(f"later additions are harmless ({report.modification_level})")
    return StampFinding(
        serial=report.serial,
        verdict=verdict,
        reasons=tuple(reasons),
        signed_at=report.signed_at,
        page=report.page,
        signer=report.signer_subject,
    )


def verify_document(
    session: Session,
    data: bytes,
    *,
    trust_roots_pem: Sequence[bytes],
    bytes_max: int,
    now: datetime | None = None,
) -> Verification:
    if len(data) > bytes_max:
        raise PdfTooLarge(f"the file has {len(data)} bytes; the limit is {bytes_max}")
    digest = hashlib.sha256(data).hexdigest()
    carries_our_signature = b"/ByteRange" in data and b"eMeterai-" in data
    try:
        reports = examine_signatures(data, trust_roots_pem, now=now)
    except PdfMalformed:
        if not carries_our_signature:
            raise
        reports = ()
    findings = tuple(_finding(session, report, reports) for report in reports if _is_ours(report))
    if not findings and carries_our_signature:
        return Verification(
            verdict=Verdict.TAMPERED,
            serial=None,
            reasons=(
                "the document carries an e-Meterai signature that no longer reads:"
                " its bytes were changed",
            ),
            signed_at=None,
            document_sha256=digest,
            stamps=(),
        )
    if not findings:
        pictures = find_stamp_pictures(data)
        if pictures:
            return Verification(
                verdict=Verdict.FORGED,
                serial=None,
                reasons=(
                    "the document shows an e-Meterai picture but carries no issuer signature",
                    *pictures,
                ),
                signed_at=None,
                document_sha256=digest,
                stamps=(),
            )
        others = f" ({len(reports)} other signature(s) found)" if reports else ""
        return Verification(
            verdict=Verdict.NOT_STAMPED,
            serial=None,
            reasons=(f"the document carries no e-Meterai{others}",),
            signed_at=None,
            document_sha256=digest,
            stamps=(),
        )
    worst = min(findings, key=lambda finding: _SEVERITY.index(finding.verdict))
    return Verification(
        verdict=worst.verdict,
        serial=worst.serial,
        reasons=tuple(reason for finding in findings for reason in finding.reasons),
        signed_at=worst.signed_at,
        document_sha256=digest,
        stamps=findings,
    )


def serial_status(session: Session, serial: str) -> SerialStatus | None:
    """What the registry says of a serial: no document content, only its digest."""
    row = session.get(Serial, normalise_serial(serial))
    if row is None or row.state not in ("used", "revoked"):
        return None
    stamp = session.scalars(select(Stamp).where(Stamp.serial == row.serial)).first()
    return SerialStatus(
        serial=row.serial,
        state=row.state,
        stamped_at=row.used_at,
        document_sha256=stamp.document_sha256 if stamp else None,
        revoked_at=row.revoked_at,
        revoked_reason=row.revoked_reason,
    )
