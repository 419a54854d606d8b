"""Double-entry ledger of quota and money (TigerBeetle rules, on SQL).

Invariants, each checked here in Python and again by a database constraint:
- every transfer moves a positive integer amount between two distinct accounts of one ledger;
- transfers are append-only; a pending transfer is settled (post, void, expire) at most once;
- a flagged account's debits, pending ones counted as spent, never exceed its credits.

Concurrency: a balance change locks the accounts' rows in ascending id order (FOR UPDATE on
PostgreSQL; SQLite serialises writers with BEGIN IMMEDIATE), then re-reads what it decides on.
"""

from emeterai.ledger.models import LEDGER_QUOTA, LEDGER_RUPIAH, LedgerAccount, Transfer
from emeterai.ledger.operations import (
    AccountSpec,
    Balance,
    Move,
    balance_of,
    expire_due,
    lock_accounts,
    open_account,
    open_accounts,
    post_pending,
    reserve,
    transfer,
    transfers,
    void_pending,
)

__all__ = [
    "LEDGER_QUOTA",
    "LEDGER_RUPIAH",
    "AccountSpec",
    "Balance",
    "LedgerAccount",
    "Move",
    "Transfer",
    "balance_of",
    "expire_due",
    "lock_accounts",
    "open_account",
    "open_accounts",
    "post_pending",
    "reserve",
    "transfer",
    "transfers",
    "void_pending",
]
