"""Quota: the e-Meterai a user holds, as accounts on the quota ledger.

Each user has two ledger accounts:
- `user:<id>:quota`, flagged so it can never be overdrawn: what the user holds;
- `user:<id>:quota:used`, which receives one unit per posted stamp.

The issuer's `issuer:quota:supply` is the source of all quota (it may go negative: the
issuer creates quota). So available = credits - debits - reserved on the user's quota
account, and used = credits posted to the used account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from emeterai.errors import InvalidAmount, InvalidIdempotencyKey
from emeterai.ledger import (
    LEDGER_QUOTA,
    AccountSpec,
    LedgerAccount,
    open_account,
    open_accounts,
    transfer,
)

__all__ = [
    "QuotaAccounts",
    "QuotaBalance",
    "add_quota",
    "check_reference",
    "issuer_supply",
    "quota_accounts",
    "quota_balance",
]

GRANT_COUNT_MAX = 1_000_000
REFERENCE_LENGTH_MAX = 128


@dataclass(frozen=True)
class QuotaAccounts:
    quota: LedgerAccount
    used: LedgerAccount


@dataclass(frozen=True)
class QuotaBalance:
    available: int
    reserved: int
    used: int
    credited: int

    def as_dict(self) -> dict[str, int]:
        return {
            "available": self.available,
            "reserved": self.reserved,
            "used": self.used,
            "credited": self.credited,
        }


def check_reference(reference: str) -> str:
    if (
        not 1 <= len(reference) <= REFERENCE_LENGTH_MAX
        or not reference.isprintable()
        or not reference.isascii()
    ):
        raise InvalidIdempotencyKey(
            f"a reference must be 1 to {REFERENCE_LENGTH_MAX} printable ASCII characters"
        )
    return reference


def issuer_supply(session: Session, *, now: datetime) -> LedgerAccount:
    return open_account(
        session,
        code="issuer:quota:supply",
        ledger=LEDGER_QUOTA,
        kind="issuer_supply",
        now=now,
        debits_must_not_exceed_credits=False,
    )


def quota_accounts(
    session: Session, account_id: int, *, now: datetime, lock: bool = False
) -> QuotaAccounts:
    """The user's two quota accounts, opened on first use; locked too with `lock`."""
    quota, used = open_accounts(
        session,
        [
            AccountSpec(f"user:{account_id}:quota", LEDGER_QUOTA, "user_quota", account_id),
            AccountSpec(
                f"user:{account_id}:quota:used",
                LEDGER_QUOTA,
                "user_quota_used",
                account_id,
                debits_must_not_exceed_credits=False,
            ),
        ],
        now=now,
        lock=lock,
    )
    return QuotaAccounts(quota=quota, used=used)


def add_quota(
    session: Session, account_id: int, count: int, *, reference: str, now: datetime
) -> int:
    """An operator's credit of `count` stamps, idempotent on `reference`.

    Returns the transfer's id."""
    if isinstance(count, bool) or not 1 <= count <= GRANT_COUNT_MAX:
        raise InvalidAmount(f"the count must be between 1 and {GRANT_COUNT_MAX}")
    supply = issuer_supply(session, now=now)
    accounts = quota_accounts(session, account_id, now=now)
    row = transfer(
        session,
        debit_account_id=supply.id,
        credit_account_id=accounts.quota.id,
        amount=count,
        now=now,
        idempotency_key=f"quota-add:{check_reference(reference)}",
        memo=f"operator credit {reference}",
    )
    return row.id


def quota_balance(session: Session, account_id: int, *, now: datetime) -> QuotaBalance:
    accounts = quota_accounts(session, account_id, now=now)
    quota, used = accounts.quota, accounts.used
    return QuotaBalance(
        available=quota.credits_posted - quota.debits_posted - quota.debits_pending,
        reserved=quota.debits_pending,
        used=used.credits_posted,
        credited=quota.credits_posted,
    )
