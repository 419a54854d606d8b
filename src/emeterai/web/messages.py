"""Every refusal and verdict in the user's words. Codes are stable (errors.py); the
texts live in the catalogues, marked here with `N_` and translated where shown."""

from __future__ import annotations

from emeterai.web.i18n import N_

ERROR_MESSAGES: dict[str, str] = {
    "NOT_A_PDF": N_("This file is not a PDF. Choose a PDF document and try again."),
    "PDF_MALFORMED": N_(
        "This PDF is damaged and cannot be read. Save or export it again, then upload it."
    ),
    "PDF_ENCRYPTED": N_(
        "This PDF is locked with a password or encryption. Save a copy without protection, "
        "then upload that copy."
    ),
    "PDF_TOO_LARGE": N_("This file is too large. The largest file accepted is {limit}."),
    "PDF_TOO_MANY_PAGES": N_("This PDF has too many pages. At most {limit} pages are accepted."),
    "PDF_LOCKED": N_(
        "This PDF is certified against any change, so no stamp can be added to it. "
        "Ask its author for a copy that is not certified."
    ),
    "PAGE_OUT_OF_RANGE": N_("The document has no such page. Choose one of its pages."),
    "POSITION_OFF_PAGE": N_(
        "The stamp does not fit there. Place it fully inside the page and try again."
    ),
    "ALREADY_STAMPED": N_(
        "This document already carries an e-Meterai. Stamp duty is paid once per document, "
        "so it needs no second stamp."
    ),
    "QUOTA_EXHAUSTED": N_(
        "You have no e-Meterai left. Buy more, then stamp the document. Nothing was charged."
    ),
    "IDEMPOTENCY_CONFLICT": N_("This request was already used for another document."),
    "REQUEST_IN_PROGRESS": N_("This stamp is still being made. Wait a moment and reload."),
    "RESERVATION_EXPIRED": N_("Stamping took too long and was cancelled. Nothing was charged."),
    "SIGNING_FAILED": N_("The document could not be stamped. Nothing was charged. Try again."),
    "INVALID_SERIAL": N_(
        "That is not a valid serial number. Check it for a typing mistake: "
        "it has 22 letters and digits."
    ),
    "SERIAL_NOT_FOUND": N_("No e-Meterai has this serial number."),
    "INVALID_EMAIL": N_("That is not a valid e-mail address."),
    "ACCOUNT_EXISTS": N_(
        "An account with this e-mail address already exists. Log in, or reset the password."
    ),
    "WEAK_PASSWORD": N_("The password must have at least 10 characters."),
    "INVALID_CREDENTIALS": N_("The e-mail address or the password is wrong."),
    "LOGIN_THROTTLED": N_("Too many failed attempts. Wait 15 minutes, or reset your password."),
    "RESET_TOKEN_INVALID": N_(
        "This reset link is invalid, already used or expired. Ask for a new one."
    ),
    "CSRF_FAILED": N_("This form has expired. Reload the page and try again."),
    "FORBIDDEN": N_("This page is not open to your account."),
    "STAMP_RETENTION_OVER": N_(
        "This stamped document is past its retention period and can no longer be downloaded."
    ),
    "DRAFT_NOT_FOUND": N_("The uploaded document is no longer here. Upload it again."),
    "BAD_INPUT": N_("Something in the form is not valid. Check it and try again."),
    "BATCH_EMPTY": N_("Choose at least one PDF, or a ZIP that holds PDFs."),
    "BATCH_TOO_LARGE": N_(
        "Too many documents or too many bytes for one batch. Split them into smaller batches."
    ),
    "INVALID_ARCHIVE": N_(
        "This ZIP cannot be read, or it is locked with a password. Make a new ZIP and try again."
    ),
    "INVALID_POSITIONS": N_(
        "The position is not valid. Give a page number, and for an exact position both x and y "
        "in points."
    ),
    "JOB_NOT_FOUND": N_("There is no such bulk job in your account."),
    "ATTEMPTS_EXHAUSTED": N_(
        "This document could not be stamped after several tries. Nothing was charged for it."
    ),
}
GENERIC_ERROR = N_("Something went wrong on our side. Nothing was charged. Try again later.")


def error_message(code: str) -> str:
    return ERROR_MESSAGES.get(code, GENERIC_ERROR)


# verdict -> (headline, explanation, what to do next)
VERDICTS: dict[str, tuple[str, str, str]] = {
    "GENUINE": (
        N_("GENUINE"),
        N_("This e-Meterai is valid and bound to exactly this document."),
        N_("You can accept the document. Keep this file as you received it."),
    ),
    "TAMPERED": (
        N_("TAMPERED"),
        N_("The document was changed after it was stamped."),
        N_("Do not accept this copy. Ask the sender for the original stamped file, unchanged."),
    ),
    "FORGED": (
        N_("FORGED"),
        N_("The stamp picture has no valid signature of the issuer."),
        N_("Do not accept this document. Report it to the issuer."),
    ),
    "UNKNOWN_SERIAL": (
        N_("UNKNOWN SERIAL"),
        N_("This serial number was never issued."),
        N_("Do not accept this document. Report it to the issuer."),
    ),
    "REUSED": (
        N_("REUSED"),
        N_("This serial number belongs to another document."),
        N_("Do not accept this document: its stamp was copied from another one."),
    ),
    "REVOKED": (
        N_("REVOKED"),
        N_("The issuer has revoked this e-Meterai."),
        N_("Do not accept this document. Ask the sender for a newly stamped one."),
    ),
    "NOT_STAMPED": (
        N_("NOT STAMPED"),
        N_("This document carries no e-Meterai."),
        N_("If the document needs stamp duty, ask the sender to stamp it."),
    ),
}
