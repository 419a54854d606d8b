"""The audit finds what it must: corrupt the rows behind its back, on both databases."""

from __future__ import annotations

from sqlalchemy import text

from emeterai.audit import run_audit
from emeterai.db import read_transaction, transaction
from emeterai.runtime import Runtime
from emeterai.stamping.signing import InProcessSigner
from tests.stamping.conftest import open_desk
from tests.support import corpus


def _broken(runtime: Runtime) -> set[str]:
    with read_transaction(runtime.sessions) as session:
        return {finding.invariant for finding in run_audit(session).findings}


def test_audit_passes_then_names_each_corruption(
    runtime: Runtime, in_process_signer: InProcessSigner
) -> None:
    alice = open_desk(runtime, in_process_signer, quota=3, email="alice@example.id")
    bob = open_desk(runtime, in_process_signer, quota=3, email="bob@example.id")
    stamped = alice.stamp(corpus.letter_a4())
    bob.stamp(corpus.letter_size())
    assert _broken(runtime) == set()

    with transaction(runtime.sessions) as session:  # Alice's stamp recorded as Bob's
        session.execute(
            text("UPDATE stamps SET account_id = :bob WHERE serial = :serial"),
            {"bob": bob.account_id, "serial": stamped.serial},
        )
    assert "consumptions-match-per-owner" in _broken(runtime)
    with transaction(runtime.sessions) as session:
        session.execute(
            text("UPDATE stamps SET account_id = :alice WHERE serial = :serial"),
            {"alice": alice.account_id, "serial": stamped.serial},
        )
    assert _broken(runtime) == set()

    with transaction(runtime.sessions) as session:  # a charge without a stamp
        used, quota = session.execute(
            text(
                "SELECT u.id, q.id FROM ledger_accounts u JOIN ledger_accounts q"
                " ON q.owner_account_id = u.owner_account_id AND q.kind = 'user_quota'"
                " WHERE u.kind = 'user_quota_used' AND u.owner_account_id = :alice"
            ),
            {"alice": alice.account_id},
        ).one()
        session.execute(
            text(
                "INSERT INTO ledger_transfers (ledger, kind, debit_account_id,"
                " credit_account_id, amount, memo, created_at)"
                " VALUES (1, 'single', :quota, :used, 1, 'sneaky', :now)"
            ),
            {"quota": quota, "used": used, "now": runtime.clock.now()},
        )
        session.execute(
            text("UPDATE ledger_accounts SET debits_posted = debits_posted + 1 WHERE id = :q"),
            {"q": quota},
        )
        session.execute(
            text("UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE id = :u"),
            {"u": used},
        )
    assert "consumptions-match-per-owner" in _broken(runtime)
