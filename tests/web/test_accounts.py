"""Web sign-in use cases on both databases: passwords, throttle, reset links, sessions."""

from __future__ import annotations

import pytest

from emeterai.accounts.passwords import (
    FAILURES_PER_EMAIL_MAX,
    attempt_login,
    register_account,
    request_password_reset,
    reset_password,
)
from emeterai.accounts.roles import grant_role, roles_of
from emeterai.accounts.sessions import end_session, open_session, session_account
from emeterai.accounts.web_models import AccountPassword
from emeterai.db import transaction
from emeterai.errors import AccountExists, LoginThrottled, ResetTokenInvalid, WeakPassword
from emeterai.runtime import Runtime
from tests.conftest import FixedClock

EMAIL = "budi@example.id"
PASSWORD = "kuda-baterai-staples"


def test_register_stores_only_an_argon2_hash_and_refuses_duplicates(
    runtime: Runtime, clock: FixedClock
) -> None:
    with transaction(runtime.sessions) as session:
        account = register_account(session, EMAIL, PASSWORD, now=clock.now())
    with transaction(runtime.sessions) as session:
        stored = session.get(AccountPassword, account.id)
        assert stored is not None and stored.password_hash.startswith("$argon2")
        assert PASSWORD not in stored.password_hash
    with pytest.raises(AccountExists), transaction(runtime.sessions) as session:
        register_account(session, "BUDI@example.id", PASSWORD, now=clock.now())
    with pytest.raises(WeakPassword), transaction(runtime.sessions) as session:
        register_account(session, "siti@example.id", "pendek", now=clock.now())


def test_failed_logins_lock_the_address_for_a_while(runtime: Runtime, clock: FixedClock) -> None:
    with transaction(runtime.sessions) as session:
        account = register_account(session, EMAIL, PASSWORD, now=clock.now())
    for _ in range(FAILURES_PER_EMAIL_MAX):
        with transaction(runtime.sessions) as session:
            assert not attempt_login(session, EMAIL, "salah", client="10.0.0.1", now=clock.now()).ok
    # Locked: even the right password waits, from any client.
    with pytest.raises(LoginThrottled), transaction(runtime.sessions) as session:
        attempt_login(session, EMAIL, PASSWORD, client="10.0.0.2", now=clock.now())
    clock.advance(16 * 60)
    with transaction(runtime.sessions) as session:
        attempt = attempt_login(session, EMAIL, PASSWORD, client="10.0.0.2", now=clock.now())
    assert attempt.account_id == account.id


def test_reset_link_works_once_within_the_hour_and_ends_sessions(
    runtime: Runtime, clock: FixedClock
) -> None:
    with transaction(runtime.sessions) as session:
        account = register_account(session, EMAIL, PASSWORD, now=clock.now())
        secret = open_session(session, account.id, now=clock.now(), ttl_s=3600)
    with transaction(runtime.sessions) as session:
        assert request_password_reset(session, "nobody@example.id", now=clock.now()) is None
        issued = request_password_reset(session, EMAIL, now=clock.now())
    assert issued is not None
    with transaction(runtime.sessions) as session:
        reset_password(session, issued.token, "kata sandi baru sekali", now=clock.now())
    with transaction(runtime.sessions) as session:
        assert session_account(session, secret, now=clock.now()) is None
        assert attempt_login(
            session, EMAIL, "kata sandi baru sekali", client="x", now=clock.now()
        ).ok
    with pytest.raises(ResetTokenInvalid), transaction(runtime.sessions) as session:
        reset_password(session, issued.token, "sekali lagi ya kawan", now=clock.now())
    with transaction(runtime.sessions) as session:
        late = request_password_reset(session, EMAIL, now=clock.now())
    assert late is not None
    clock.advance(3601)
    with pytest.raises(ResetTokenInvalid), transaction(runtime.sessions) as session:
        reset_password(session, late.token, "terlambat satu jam", now=clock.now())


def test_sessions_expire_and_end(runtime: Runtime, clock: FixedClock) -> None:
    with transaction(runtime.sessions) as session:
        account = register_account(session, EMAIL, PASSWORD, now=clock.now())
        grant_role(session, account.id, "issuer", now=clock.now())
        grant_role(session, account.id, "issuer", now=clock.now())
        first = open_session(session, account.id, now=clock.now(), ttl_s=60)
        second = open_session(session, account.id, now=clock.now(), ttl_s=3600)
    with transaction(runtime.sessions) as session:
        assert [r.role for r in roles_of(session, account.id)] == ["issuer"]
        assert session_account(session, first, now=clock.now()) == account.id
        assert session_account(session, "forged", now=clock.now()) is None
        end_session(session, second, now=clock.now())
    clock.advance(61)
    with transaction(runtime.sessions) as session:
        assert session_account(session, first, now=clock.now()) is None
        assert session_account(session, second, now=clock.now()) is None
