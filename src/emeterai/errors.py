"""The one error tree of emeterai.

Every refusal the product makes is an `EmeteraiError` with a stable `code`. Edges map
errors in exactly one place each: problem+json for HTTP (`status`), an exit code for the
CLI. The codes are part of the public contract: never rename one, only add.

A verification outcome is not an error: it is a frozen result value (see `verify/`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class EmeteraiError(Exception):
    """Base of every domain error."""

    code: ClassVar[str] = "INTERNAL"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


# --- Input: the document --------------------------------------------------------------


class BadInput(EmeteraiError):
    code = "BAD_INPUT"
    status = 422
    title = "The request is not valid"


class NotAPdf(BadInput):
    code = "NOT_A_PDF"
    title = "The file is not a PDF document"


class PdfMalformed(BadInput):
    code = "PDF_MALFORMED"
    title = "The PDF is broken or truncated and cannot be read"


class PdfEncrypted(BadInput):
    code = "PDF_ENCRYPTED"
    title = "The PDF is encrypted or password-protected; remove the protection first"


class PdfTooLarge(BadInput):
    code = "PDF_TOO_LARGE"
    status = 413
    title = "The PDF is larger than the limit"


class PdfTooManyPages(BadInput):
    code = "PDF_TOO_MANY_PAGES"
    status = 413
    title = "The PDF has more pages than the limit"


class PdfLocked(BadInput):
    code = "PDF_LOCKED"
    title = "The PDF is certified against any change, so it cannot be stamped"


class PageOutOfRange(BadInput):
    code = "PAGE_OUT_OF_RANGE"
    title = "The document has no such page"


class PositionOffPage(BadInput):
    code = "POSITION_OFF_PAGE"
    title = "The stamp would not fit on the page at that position"


class AlreadyStamped(EmeteraiError):
    code = "ALREADY_STAMPED"
    status = 409
    title = "The document already carries an e-Meterai; duty is due once per document"


class InvalidSerial(BadInput):
    code = "INVALID_SERIAL"
    title = "That is not a valid e-Meterai serial number (check for a typing mistake)"


class InvalidEmail(BadInput):
    code = "INVALID_EMAIL"
    title = "That is not a valid e-mail address"


class InvalidIdempotencyKey(BadInput):
    code = "INVALID_IDEMPOTENCY_KEY"
    title = "The idempotency key must be 1 to 128 visible ASCII characters"


class InvalidAmount(BadInput):
    code = "INVALID_AMOUNT"
    title = "The amount must be a positive whole number within the limit"


# --- Identity ---------------------------------------------------------------------------


class Unauthenticated(EmeteraiError):
    code = "UNAUTHENTICATED"
    status = 401
    title = "A valid API token is required"


class AccountNotFound(EmeteraiError):
    code = "ACCOUNT_NOT_FOUND"
    status = 404
    title = "No account has that e-mail address"


class AccountExists(EmeteraiError):
    code = "ACCOUNT_EXISTS"
    status = 409
    title = "An account with that e-mail address already exists"


# --- Ledger and registry ----------------------------------------------------------------


class QuotaExhausted(EmeteraiError):
    code = "QUOTA_EXHAUSTED"
    status = 402
    title = "No e-Meterai quota is left on this account; buy more first"


class IdempotencyConflict(EmeteraiError):
    code = "IDEMPOTENCY_CONFLICT"
    status = 409
    title = "This idempotency key was already used for a different request"


class RequestInProgress(EmeteraiError):
    code = "REQUEST_IN_PROGRESS"
    status = 409
    title = "A request with this idempotency key is still being processed; retry shortly"


class ReservationExpired(EmeteraiError):
    code = "RESERVATION_EXPIRED"
    status = 503
    title = "Stamping took too long and was abandoned; no quota was charged, try again"


class TransferConflict(EmeteraiError):
    """A pending transfer was already posted, voided or expired."""

    code = "TRANSFER_CONFLICT"
    status = 409
    title = "The reservation was already settled"


class SerialNotFound(EmeteraiError):
    code = "SERIAL_NOT_FOUND"
    status = 404
    title = "No e-Meterai has that serial number"


class SerialNotRevocable(EmeteraiError):
    code = "SERIAL_NOT_REVOCABLE"
    status = 409
    title = "Only a used serial can be revoked"


# --- Stamping machinery -----------------------------------------------------------------


class IssuerNotInitialised(EmeteraiError):
    code = "ISSUER_NOT_INITIALISED"
    status = 503
    title = "The issuer keys are missing; run 'emeterai init' first"


class KeyPassphraseMissing(EmeteraiError):
    code = "KEY_PASSPHRASE_MISSING"
    status = 503
    title = "The key passphrase is missing; set EMETERAI_KEY_PASSPHRASE"


class KeyPassphraseWrong(EmeteraiError):
    code = "KEY_PASSPHRASE_WRONG"
    status = 503
    title = "The key passphrase does not open the issuer keys"


class SigningFailed(EmeteraiError):
    code = "SIGNING_FAILED"
    status = 500
    title = "The document could not be signed; no quota was charged"


class DatabaseNotReady(EmeteraiError):
    code = "DATABASE_NOT_READY"
    status = 503
    title = "The database is not initialised; run 'emeterai init' first"


class ExceedsCredits(EmeteraiError):
    """A debit would overdraw an account flagged `debits_must_not_exceed_credits`."""

    code = "EXCEEDS_CREDITS"
    status = 409
    title = "The account does not hold enough to cover this transfer"


class LedgerAccountNotFound(EmeteraiError):
    code = "LEDGER_ACCOUNT_NOT_FOUND"
    status = 404
    title = "No such ledger account"


# --- web: sign-in and the pages ---------------------------------------------------------


class InvalidCredentials(EmeteraiError):
    code = "INVALID_CREDENTIALS"
    status = 401
    title = "The e-mail address or the password is wrong"


class LoginThrottled(EmeteraiError):
    code = "LOGIN_THROTTLED"
    status = 429
    title = "Too many failed log-ins; wait a few minutes and try again"


class WeakPassword(BadInput):
    code = "WEAK_PASSWORD"
    title = "The password must have 10 to 200 characters"


class ResetTokenInvalid(EmeteraiError):
    code = "RESET_TOKEN_INVALID"
    status = 400
    title = "The password reset link is invalid, used or expired; ask for a new one"


class CsrfFailed(EmeteraiError):
    code = "CSRF_FAILED"
    status = 403
    title = "The form expired or did not come from this site; reload the page and try again"


class Forbidden(EmeteraiError):
    code = "FORBIDDEN"
    status = 403
    title = "This page is not open to your account"


class StampRetentionOver(EmeteraiError):
    code = "STAMP_RETENTION_OVER"
    status = 410
    title = "The stamped document is past its retention period and can no longer be downloaded"


class DraftNotFound(EmeteraiError):
    code = "DRAFT_NOT_FOUND"
    status = 404
    title = "The uploaded document is no longer here; upload it again"


# --- bulk jobs (docs/deploy.md) -----------------------------------------------------------


class JobNotFound(EmeteraiError):
    code = "JOB_NOT_FOUND"
    status = 404
    title = "No bulk job has that id"


class BatchEmpty(BadInput):
    code = "BATCH_EMPTY"
    title = "The batch holds no document"


class BatchTooLarge(BadInput):
    code = "BATCH_TOO_LARGE"
    status = 413
    title = "The batch has more documents or more bytes than the limit"


class InvalidArchive(BadInput):
    code = "INVALID_ARCHIVE"
    title = "The ZIP archive is broken, encrypted or holds something other than files"


class InvalidPositions(BadInput):
    code = "INVALID_POSITIONS"
    title = "The positions must name a page (and x, y in points) for each document"


class InvalidWebhookUrl(BadInput):
    code = "INVALID_WEBHOOK_URL"
    title = "The webhook URL must be an http or https URL of at most 2000 characters"


class JobNotRetryable(EmeteraiError):
    code = "JOB_NOT_RETRYABLE"
    status = 409
    title = "Only a dead-lettered job whose documents are still kept can be retried"


class JobLeaseLost(EmeteraiError):
    """A worker's lease ran out and another worker took the document over."""

    code = "JOB_LEASE_LOST"
    status = 409
    title = "Another worker took this document over"


# --- Channels: orders, payments, refunds -------------------------------------------------


class ChannelNotFound(EmeteraiError):
    code = "CHANNEL_NOT_FOUND"
    status = 404
    title = "No sales channel has that name"


class ChannelExists(EmeteraiError):
    code = "CHANNEL_EXISTS"
    status = 409
    title = "A sales channel with that name already exists"


class InvalidChannel(BadInput):
    code = "INVALID_CHANNEL"
    title = "The channel's name, kind or settings are not valid"


class ChannelStockExhausted(EmeteraiError):
    """The channel's stock and the credit the issuer allows it cannot cover the order."""

    code = "CHANNEL_STOCK_EXHAUSTED"
    status = 409
    title = "This channel cannot sell that many stamps now; its credit limit is reached"


class OrderNotFound(EmeteraiError):
    code = "ORDER_NOT_FOUND"
    status = 404
    title = "No such order"


class PaymentRejected(EmeteraiError):
    """A payment confirmation that credits nothing; every one is recorded for the operator."""

    code = "PAYMENT_REJECTED"
    status = 422
    title = "The payment confirmation was refused; nothing was credited"


class MalformedConfirmation(PaymentRejected):
    code = "MALFORMED_CONFIRMATION"
    status = 422
    title = "The payment confirmation is not valid JSON with the required fields"


class BadSignature(PaymentRejected):
    code = "BAD_SIGNATURE"
    status = 401
    title = "The X-Emeterai-Signature does not match the body and timestamp"


class StaleTimestamp(PaymentRejected):
    code = "STALE_TIMESTAMP"
    status = 401
    title = "The X-Emeterai-Timestamp is missing or outside the replay window"


class ReplayedConfirmation(PaymentRejected):
    code = "REPLAYED_CONFIRMATION"
    status = 409
    title = "This exact signed confirmation was already received; sign each delivery anew"


class UnknownOrder(PaymentRejected):
    code = "UNKNOWN_ORDER"
    status = 404
    title = "No order has that id"


class OrderOfAnotherChannel(PaymentRejected):
    code = "ORDER_OF_ANOTHER_CHANNEL"
    status = 403
    title = "The order belongs to another channel"


class WrongAmount(PaymentRejected):
    code = "WRONG_AMOUNT"
    status = 422
    title = "The amount paid is not the order's amount"


class PaymentReferenceConflict(PaymentRejected):
    code = "PAYMENT_REFERENCE_CONFLICT"
    status = 409
    title = "This payment reference was already used for another order or amount"


class OrderAlreadyPaid(PaymentRejected):
    code = "ORDER_ALREADY_PAID"
    status = 409
    title = "The order was already paid under another payment reference"


class OrderNotRefundable(EmeteraiError):
    code = "ORDER_NOT_REFUNDABLE"
    status = 409
    title = "Only a credited order that was not refunded yet can be refunded"


class NothingToRefund(EmeteraiError):
    code = "NOTHING_TO_REFUND"
    status = 409
    title = "No unused quota of this order is left to refund, or the fee exceeds its value"


class SandboxDisabled(EmeteraiError):
    code = "SANDBOX_DISABLED"
    status = 404
    title = "The sandbox payment provider is off (EMETERAI_PAYMENTS_SANDBOX=1 turns it on)"


class SettlementFileInvalid(BadInput):
    code = "SETTLEMENT_FILE_INVALID"
    title = "The settlement file is not a valid CSV with the required header, or too large"


class InvalidDateRange(BadInput):
    code = "INVALID_DATE_RANGE"
    title = "The dates must be YYYY-MM-DD with --from not after --to"


# --- admission ---


class Queued(EmeteraiError):
    code = "QUEUED"
    status = 429
    title = "You are in the queue; repeat the request with your ticket after Retry-After"


class RateLimited(EmeteraiError):
    code = "RATE_LIMITED"
    status = 429
    title = "Too many requests; wait for Retry-After, your place in the queue is kept"


class Busy(EmeteraiError):
    code = "BUSY"
    status = 429
    title = "The server is at its limit for a moment; repeat after Retry-After"


class TicketInvalid(EmeteraiError):
    code = "TICKET_INVALID"
    status = 400
    title = "The queue ticket is not valid"


class AdmissionNotReady(EmeteraiError):
    code = "ADMISSION_NOT_READY"
    status = 503
    title = "The waiting room's shared store does not answer yet"


# --- core: command line and registry ---


class OutputNotWritable(BadInput):
    code = "OUTPUT_NOT_WRITABLE"
    title = "The output file cannot be written there; nothing was charged"


class InvalidReason(BadInput):
    code = "INVALID_REASON"
    title = "A reason of 1 to 500 characters is required"
