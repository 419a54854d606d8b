"""The `emeterai` command as an operator runs it: real processes, both databases."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, PUBLIC_URL
from tests.support import corpus, tamper
from tests.support.external import assert_pdfsig_ok, assert_qpdf_ok, decode_qr, nss_db


@dataclass
class Cli:
    env: dict[str, str]
    cwd: Path

    def __call__(self, *arguments: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "emeterai", *arguments],
            env={**self.env, **extra_env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *arguments: str, **extra_env: str) -> str:
        result = self(*arguments, **extra_env)
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout

    def quota(self, email: str) -> dict[str, int]:
        shown: dict[str, int] = json.loads(self.ok("quota", "show", email, "--json"))
        return shown


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EMETERAI_") or key == "EMETERAI_TEST_POSTGRES_URL"
    }
    env.update(
        EMETERAI_DATA_DIR=str(tmp_path / "var"),
        EMETERAI_DATABASE_URL=database_url,
        EMETERAI_KEY_PASSPHRASE=PASSPHRASE,
        EMETERAI_PUBLIC_URL=PUBLIC_URL,
    )
    runner = Cli(env=env, cwd=tmp_path)
    runner.ok("init")
    return runner


@pytest.fixture
def funded(cli: Cli) -> Cli:
    token = cli.ok("account", "create", "pelamar@example.id").strip()
    assert re.fullmatch(r"emt_[a-z2-7]{16}_[A-Za-z0-9_-]{43}", token)
    cli.ok("quota", "add", "pelamar@example.id", "3", "--reference", "grant-1")
    return cli


def test_init_is_idempotent(cli: Cli, tmp_path: Path) -> None:
    pki = tmp_path / "var" / "pki"
    before = {path.name: path.read_bytes() for path in pki.iterdir()}
    assert "kept" in cli.ok("init")
    assert {path.name: path.read_bytes() for path in pki.iterdir()} == before
    for path in pki.iterdir():
        if "key" in path.name:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert b"ENCRYPTED" in path.read_bytes()


def test_init_without_passphrase_warns_and_keeps_a_private_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMETERAI_")}
    data_dir = tmp_path / "dev"
    result = subprocess.run(
        [sys.executable, "-m", "emeterai", "init", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr
    passphrase_file = data_dir / "key-passphrase"
    assert stat.S_IMODE(passphrase_file.stat().st_mode) == 0o600
    assert (data_dir / "emeterai.db").exists()


def test_operator_flow(funded: Cli, tmp_path: Path) -> None:
    cli = funded
    cli.ok("quota", "add", "pelamar@example.id", "3", "--reference", "grant-1")  # a repeat
    assert cli.quota("pelamar@example.id") == {
        "email": "pelamar@example.id",
        "available": 3,
        "reserved": 0,
        "used": 0,
        "credited": 3,
    }
    source = tmp_path / "surat.pdf"
    source.write_bytes(corpus.letter_a4())
    output = tmp_path / "surat-bermeterai.pdf"
    serial = cli.ok(
        "stamp",
        str(source),
        "-o",
        str(output),
        "--account",
        "pelamar@example.id",
        "--page",
        "1",
        "--x",
        "400",
        "--y",
        "60",
    ).strip()
    assert re.fullmatch(r"[0-9A-Z]{22}", serial)

    root = tmp_path / "root.pem"
    root.write_text(cli.ok("pki", "export-root"))
    assert root.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert_pdfsig_ok(output, nss_db(tmp_path, root.read_bytes()))
    assert_qpdf_ok(output)
    assert decode_qr(output, 1) == [f"{PUBLIC_URL}/v/{serial}"]

    verdict = json.loads(cli.ok("verify", str(output), "--json"))
    assert verdict["verdict"] == "GENUINE"
    assert verdict["serial"] == serial
    assert {"reasons", "signed_at", "document_sha256"} <= verdict.keys()
    assert cli.quota("pelamar@example.id")["used"] == 1

    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(tamper.flip_byte_in_signed_range(output.read_bytes()))
    assert cli("verify", str(tampered)).returncode == 10
    assert cli("verify", str(source)).returncode == 15

    cli.ok("revoke", serial, "--reason", "issued by mistake")
    assert cli("verify", str(output)).returncode == 14
    assert "ok" in cli.ok("audit")


def test_refused_input_exits_3_with_its_code_and_charges_nothing(
    funded: Cli, tmp_path: Path
) -> None:
    cases = {
        "encrypted.pdf": (corpus.encrypted(), [], "PDF_ENCRYPTED"),
        "photo.pdf": (corpus.not_a_pdf(), [], "NOT_A_PDF"),
        "letter.pdf": (corpus.letter_a4(), ["--page", "9"], "PAGE_OUT_OF_RANGE"),
    }
    for name, (data, options, code) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = funded(
            "stamp",
            str(path),
            "-o",
            str(tmp_path / "out.pdf"),
            "--account",
            "pelamar@example.id",
            *options,
        )
        assert result.returncode == 3, result.stderr
        assert code in result.stderr
    assert not (tmp_path / "out.pdf").exists()
    assert funded.quota("pelamar@example.id")["available"] == 3
    missing = funded("quota", "show", "nobody@example.id")
    assert missing.returncode == 3 and "ACCOUNT_NOT_FOUND" in missing.stderr


def release_expired_as_of(database_url: str, email: str, later: datetime) -> None:
    """What `emeterai quota show` does first (release expired reservations), with the
    clock moved to `later`: no test waits for a reservation to run out on the wall clock."""
    from emeterai.accounts import account_by_email
    from emeterai.db import make_engine, make_sessions, transaction
    from emeterai.quota import quota_accounts
    from emeterai.stamping.service import release_expired

    engine = make_engine(database_url)
    try:
        with transaction(make_sessions(engine)) as session:
            account = account_by_email(session, email)
            accounts = quota_accounts(session, account.id, now=later)
            release_expired(session, now=later, debit_account_id=accounts.quota.id)
    finally:
        engine.dispose()


@pytest.mark.parametrize("point", ["stamp.after_reserve", "stamp.after_sign"])
def test_crash_before_posting_gives_the_quota_back(
    funded: Cli, tmp_path: Path, database_url: str, point: str
) -> None:
    source = tmp_path / "surat.pdf"
    source.write_bytes(corpus.letter_a4())
    crashed = funded(
        "stamp",
        str(source),
        "-o",
        str(tmp_path / "out.pdf"),
        "--account",
        "pelamar@example.id",
        EMETERAI_FAULT_POINTS=point,
        EMETERAI_RESERVATION_TTL_S="600",
    )
    assert crashed.returncode == -9
    held = funded.quota("pelamar@example.id")
    assert (held["available"], held["reserved"], held["used"]) == (2, 1, 0)
    release_expired_as_of(
        database_url, "pelamar@example.id", datetime.now(UTC) + timedelta(seconds=601)
    )
    back = funded.quota("pelamar@example.id")
    assert (back["available"], back["reserved"], back["used"]) == (3, 0, 0)
    assert "BROKEN" not in funded.ok("audit")


def test_crash_after_posting_keeps_the_stamp_for_the_retry(funded: Cli, tmp_path: Path) -> None:
    source = tmp_path / "surat.pdf"
    source.write_bytes(corpus.letter_a4())
    arguments = (
        "stamp",
        str(source),
        "-o",
        str(tmp_path / "out.pdf"),
        "--account",
        "pelamar@example.id",
        "--idempotency-key",
        "surat-1",
    )
    crashed = funded(*arguments, EMETERAI_FAULT_POINTS="stamp.after_post")
    assert crashed.returncode == -9
    assert not (tmp_path / "out.pdf").exists()
    serial = funded.ok(*arguments).strip()
    assert funded.quota("pelamar@example.id")["used"] == 1
    verdict = json.loads(funded.ok("verify", str(tmp_path / "out.pdf"), "--json"))
    assert verdict["verdict"] == "GENUINE" and verdict["serial"] == serial
    assert "BROKEN" not in funded.ok("audit")


def test_an_unwritable_output_is_refused_before_any_charge(funded: Cli, tmp_path: Path) -> None:
    source = tmp_path / "surat.pdf"
    source.write_bytes(corpus.letter_a4())
    for output in (tmp_path / "no" / "such" / "dir" / "out.pdf", tmp_path):
        result = funded("stamp", str(source), "-o", str(output), "--account", "pelamar@example.id")
        assert result.returncode == 3, result.stderr
        assert "OUTPUT_NOT_WRITABLE" in result.stderr
    assert funded.quota("pelamar@example.id")["available"] == 3
    # Without a key of the user's, running the same command again is the same request.
    for _ in range(2):
        funded.ok(
            "stamp", str(source), "-o", str(tmp_path / "out.pdf"), "--account", "pelamar@example.id"
        )
    assert funded.quota("pelamar@example.id")["used"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_uninitialised_data_dir_is_left_alone_and_no_password_is_shown(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMETERAI_")}
    document = tmp_path / "x.pdf"
    document.write_bytes(corpus.letter_a4())
    missing = tmp_path / "never-initialised"
    result = subprocess.run(
        [sys.executable, "-m", "emeterai", "verify", str(document), "--data-dir", str(missing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3 and "DATABASE_NOT_READY" in result.stderr
    assert not (missing / "emeterai.db").exists()
    secret_url = "postgresql+psycopg://postgres:S3cretPassw0rd@127.0.0.1:5432/emeterai_absent_db"
    result = subprocess.run(
        [sys.executable, "-m", "emeterai", "audit", "--data-dir", str(tmp_path)],
        env={**env, "EMETERAI_DATABASE_URL": secret_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3 and "DATABASE_UNAVAILABLE" in result.stderr
    assert "S3cretPassw0rd" not in result.stderr + result.stdout
