"""The `emeterai` command. Each command parses, calls one use case, and maps the result.

Exit codes: 0 success; 1 an audit found a broken invariant; 2 a usage error; 3 a refused
request (the error's code is printed); 10 and up, a verification verdict (see verify).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from emeterai.cli.common import (
    EXIT_AUDIT_FAILED,
    EXIT_REFUSED,
    DataDir,
    err,
    open_runtime,
    out,
    output_file,
    read_pdf,
    write_atomically,
)
from emeterai.config import load_settings
from emeterai.db import read_transaction, transaction
from emeterai.errors import EmeteraiError
from emeterai.runtime import build_runtime

app = typer.Typer(
    name="emeterai",
    help="e-Meterai: stamp PDFs with the electronic stamp duty, and verify them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
account_app = typer.Typer(help="User accounts.", no_args_is_help=True)
quota_app = typer.Typer(help="Quota: the e-Meterai an account holds.", no_args_is_help=True)
pki_app = typer.Typer(help="The issuer's certificates.", no_args_is_help=True)
reservations_app = typer.Typer(
    help="Quota reservations of stamps in progress.", no_args_is_help=True
)
bench_app = typer.Typer(
    help="Benchmarks (programs that measure; never tests).", no_args_is_help=True
)
app.add_typer(account_app, name="account")
app.add_typer(quota_app, name="quota")
app.add_typer(pki_app, name="pki")
app.add_typer(reservations_app, name="reservations")
app.add_typer(bench_app, name="bench")


@app.command()
def init(
    data_dir: DataDir = None,
    key_algorithm: Annotated[
        str | None,
        typer.Option(help="ecdsa-p256 (default) or rsa-2048; used only when keys are created."),
    ] = None,
) -> None:
    """Create the data directory, the database and the issuer PKI. Safe to run again."""
    from emeterai.migrate import upgrade_database
    from emeterai.pki import create_issuer_pki

    settings = load_settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.key_passphrase is not None:
        passphrase = settings.key_passphrase.get_secret_value().encode()
    elif settings.passphrase_file.exists():
        passphrase = settings.passphrase_file.read_text().strip().encode()
    else:
        passphrase = secrets.token_urlsafe(32).encode()
        descriptor = os.open(settings.passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(passphrase.decode() + "\n")
        err.print(
            "[bold red]WARNING:[/] no EMETERAI_KEY_PASSPHRASE was set, so a development"
            f" passphrase was generated and written to {settings.passphrase_file} (mode 0600)."
            "\n[bold red]Never do this in production:[/] set EMETERAI_KEY_PASSPHRASE from"
            " your secret store instead, and keep the passphrase away from the keys."
        )
    _, created = create_issuer_pki(
        settings.pki_dir, passphrase, algorithm=key_algorithm or settings.key_algorithm
    )
    upgrade_database(settings.resolved_database_url)
    out.print(f"data directory: {settings.data_dir.resolve()}")
    out.print(f"database: {_redact(settings.resolved_database_url)} (migrated)")
    out.print(f"issuer PKI: {settings.pki_dir.resolve()} ({'created' if created else 'kept'})")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=0, max=64, help="Server processes (default: one per CPU).")
    ] = 0,
    admission: Annotated[
        bool, typer.Option(help="The waiting room; --no-admission only to compare.")
    ] = True,
    admission_rate: Annotated[
        float | None,
        typer.Option(min=0.01, help="Pin the admission rate (per process, per second)."),
    ] = None,
) -> None:
    """Serve the HTTP API and the web pages."""
    import shutil
    import tempfile

    import uvicorn

    settings = load_settings(data_dir)
    build_runtime(settings).close()  # refuse to start on an uninitialised data directory
    os.environ["EMETERAI_DATA_DIR"] = str(settings.data_dir.resolve())
    workers = workers or (os.cpu_count() or 1)
    if not admission:
        os.environ["EMETERAI_ADMISSION_ENABLED"] = "false"
    if admission_rate is not None:
        os.environ["EMETERAI_ADMISSION_RATE_PER_S"] = str(admission_rate)
    from emeterai.api.admission import prepare_store

    prepare_store(settings)
    # Metrics of all workers are summed through files here (prometheus_client multiprocess).
    metrics_dir = tempfile.mkdtemp(prefix="emeterai-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "emeterai.api.app:create_app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            timeout_graceful_shutdown=30,
            # Longer than clients keep idle connections (httpx 5 s), so that a reused
            # connection is never closed under a request in flight.
            timeout_keep_alive=20,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@account_app.command("create")
def account_create(email: str, data_dir: DataDir = None) -> None:
    """Create an account and print its API token (shown only this once)."""
    from emeterai.accounts import create_account, issue_token

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        account = create_account(session, email, now=runtime.clock.now())
        issued = issue_token(session, account, now=runtime.clock.now())
    err.print(f"account {account.email} created; its API token is shown only this once:")
    print(issued.token)


@account_app.command("token")
def account_token(email: str, data_dir: DataDir = None) -> None:
    """Issue another API token for EMAIL (shown only this once)."""
    from emeterai.accounts import account_by_email, issue_token

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        account = account_by_email(session, email)
        issued = issue_token(session, account, now=runtime.clock.now())
    err.print(f"a new API token for {account.email}, shown only this once:")
    print(issued.token)


@account_app.command("revoke-tokens")
def account_revoke_tokens(email: str, data_dir: DataDir = None) -> None:
    """Revoke every API token of EMAIL at once (a leaked token)."""
    from emeterai.accounts import account_by_email, revoke_tokens

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        account = account_by_email(session, email)
        revoked = revoke_tokens(session, account, now=runtime.clock.now())
    out.print(f"{revoked} token(s) of {account.email} revoked")


@quota_app.command("add")
def quota_add(
    email: str,
    count: int,
    reference: Annotated[str, typer.Option(help="Unique reference; a repeat changes nothing.")],
    data_dir: DataDir = None,
) -> None:
    """An operator's credit of COUNT stamps to EMAIL, idempotent on --reference."""
    from emeterai.accounts import account_by_email
    from emeterai.quota import add_quota, quota_balance

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        now = runtime.clock.now()
        account = account_by_email(session, email)
        add_quota(session, account.id, count, reference=reference, now=now)
        balance = quota_balance(session, account.id, now=now)
    out.print(f"{account.email}: {balance.available} available")


@quota_app.command("show")
def quota_show(
    email: str,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an account's quota: available, reserved (stamps in progress) and used."""
    from emeterai.accounts import account_by_email
    from emeterai.quota import quota_accounts, quota_balance
    from emeterai.stamping.service import release_expired

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        now = runtime.clock.now()
        account = account_by_email(session, email)
        accounts = quota_accounts(session, account.id, now=now)
        release_expired(session, now=now, debit_account_id=accounts.quota.id)
        balance = quota_balance(session, account.id, now=now)
    if as_json:
        print(json.dumps({"email": account.email, **balance.as_dict()}))
        return
    out.print(
        f"{account.email}: {balance.available} available, {balance.reserved} reserved,"
        f" {balance.used} used"
    )


@app.command()
def stamp(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The PDF to stamp.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the stamped PDF.")],
    account: Annotated[str, typer.Option(help="E-mail of the account that pays.")],
    page: Annotated[int, typer.Option(min=1, help="Page, from 1.")] = 1,
    x: Annotated[
        float | None, typer.Option("--x", help="Points from the visible page's left.")
    ] = None,
    y: Annotated[
        float | None, typer.Option("--y", help="Points from the visible page's bottom.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="A retry with the same key returns the same stamp.")
    ] = None,
    additional: Annotated[
        bool, typer.Option(help="Allow a second stamp on a document with several parties.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Stamp a PDF: one quota, one serial, a visible e-Meterai and the issuer's signature."""
    from emeterai.accounts import account_by_email
    from emeterai.stamping.service import (
        StampRequest,
        issue_stamp,
        placement_for,
        request_digest,
    )
    from emeterai.stamping.signing import InProcessSigner, load_material

    with open_runtime(data_dir) as runtime:
        settings = runtime.settings
        document = read_pdf(source, settings)
        placement = placement_for(document, page=page, x_pt=x, y_pt=y, settings=settings)
        # Without a key of the user's, the same document at the same place is the same
        # request: running the command again after a failure never charges twice.
        key = idempotency_key or f"cli:{request_digest(document, placement)[:40]}"
        with transaction(runtime.sessions) as session:
            account_id = account_by_email(session, account).id
        with output_file(output) as write:  # refuses an unwritable path before any charge
            signer = InProcessSigner(load_material(settings), timestamp_url=settings.timestamp_url)
            request = StampRequest(
                account_id=account_id,
                document=document,
                placement=placement,
                idempotency_key=key,
                allow_additional=additional,
            )
            stamped = issue_stamp(
                runtime.sessions,
                request,
                sign=signer,
                blobs=runtime.blobs,
                settings=settings,
                clock=runtime.clock,
            )
            write(stamped.document)
    note = " (an earlier request with this key made it)" if stamped.replayed else ""
    err.print(f"stamped {output}{note}")
    print(stamped.serial)


@app.command()
def verify(
    document: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The PDF to check.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Check a stamped PDF. Exit 0 only for GENUINE; each other verdict has its own code."""
    from emeterai.verify.service import EXIT_CODES, verify_document

    with open_runtime(data_dir) as runtime, read_transaction(runtime.sessions) as session:
        data = read_pdf(document, runtime.settings)
        result = verify_document(
            session,
            data,
            trust_roots_pem=runtime.trust_roots(),
            bytes_max=runtime.settings.upload_bytes_max,
            now=runtime.clock.now(),
        )
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        colour = "green" if result.verdict == "GENUINE" else "red"
        out.print(f"[bold {colour}]{result.verdict.value}[/]  serial {result.serial or '-'}")
        for reason in result.reasons:
            out.print(f"  - {reason}")
        if result.signed_at:
            out.print(f"  stamped at {result.signed_at.isoformat()}")
        out.print(f"  document sha256 {result.document_sha256}")
    raise typer.Exit(EXIT_CODES[result.verdict])


@pki_app.command("export-root")
def pki_export_root(data_dir: DataDir = None) -> None:
    """Print the issuer root certificate (PEM), for verifiers to trust."""
    from emeterai.pki import root_certificate_pem

    sys.stdout.write(root_certificate_pem(load_settings(data_dir).pki_dir).decode())


@app.command()
def sample(
    output: Annotated[Path, typer.Argument(help="Where to write the sample PDF.")],
    scanned: Annotated[bool, typer.Option(help="An 800 KB scanned page instead.")] = False,
) -> None:
    """Write a sample document to try stamping with: a one-page A4 letter."""
    from emeterai.pdf.samples import letter_a4, scanned_page

    write_atomically(output, scanned_page() if scanned else letter_a4())
    out.print(f"wrote {output}")


@pki_app.command("enroll-token")
def pki_enroll_token(data_dir: DataDir = None) -> None:
    """Keep the stamping key on the PKCS#11 token (EMETERAI_PKCS11_*); idempotent."""
    from emeterai.pki.token import enroll_token_key
    from emeterai.stamping.signing import key_passphrase, token_key

    settings = load_settings(data_dir)
    token = token_key(settings)
    if token is None:
        raise typer.BadParameter("set EMETERAI_PKCS11_MODULE (and _TOKEN_LABEL, _PIN) first")
    path, created = enroll_token_key(settings.pki_dir, key_passphrase(settings), token)
    out.print(f"stamping certificate for the token key: {path} ({'issued' if created else 'kept'})")


@pki_app.command("import")
def pki_import(
    root_cert: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Root CA (PEM).")],
    signer_cert: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Stamping certificate (PEM).")
    ],
    signer_key: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Stamping private key (PEM).")
    ],
    data_dir: DataDir = None,
) -> None:
    """Use a production issuer: its root and stamping certificate, and the stamping key
    (encrypted here with EMETERAI_KEY_PASSPHRASE; the root's private key stays offline)."""
    from emeterai.pki import import_issuer
    from emeterai.stamping.signing import key_passphrase

    settings = load_settings(data_dir)
    key_password = os.environ.get("EMETERAI_IMPORT_KEY_PASSWORD")
    import_issuer(
        settings.pki_dir,
        key_passphrase(settings),
        root_cert_pem=root_cert.read_bytes(),
        signer_cert_pem=signer_cert.read_bytes(),
        signer_key_pem=signer_key.read_bytes(),
        signer_key_password=key_password.encode() if key_password else None,
    )
    out.print(f"issuer imported into {settings.pki_dir}")


@app.command()
def revoke(
    serial: str,
    reason: Annotated[str, typer.Option(help="Why the issuer withdraws this stamp.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a used serial: verification then answers REVOKED."""
    from emeterai.serials import revoke_serial

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        row = revoke_serial(session, serial, reason=reason, now=runtime.clock.now())
    out.print(f"serial {row.serial} revoked")


@app.command()
def audit(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check every ledger and registry invariant; exit 1 naming any that is broken."""
    from emeterai.audit import run_audit

    with open_runtime(data_dir) as runtime, read_transaction(runtime.sessions) as session:
        report = run_audit(session)
    if as_json:
        findings = [{"invariant": f.invariant, "detail": f.detail} for f in report.findings]
        print(json.dumps({"ok": report.ok, "checked": report.checked, "findings": findings}))
    else:
        broken = {finding.invariant for finding in report.findings}
        for name in report.checked:
            out.print(f"{'[red]BROKEN[/]' if name in broken else '[green]ok[/]    '} {name}")
        for finding in report.findings:
            out.print(f"  {finding.invariant}: {finding.detail}")
    if not report.ok:
        raise typer.Exit(EXIT_AUDIT_FAILED)


@reservations_app.command("release-expired")
def reservations_release_expired(data_dir: DataDir = None) -> None:
    """Return the quota of reservations whose stamping never finished (run it from cron)."""
    from emeterai.stamping.service import release_expired

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        released = release_expired(session, now=runtime.clock.now())
    out.print(f"{released} expired reservation(s) released")


from emeterai.cli import channels as _channels  # noqa: E402

_channels.register(app)

from emeterai.cli import jobs as _jobs  # noqa: E402

_jobs.register(app)

from emeterai.cli import admission as _admission  # noqa: E402

_admission.register(app)

from emeterai.cli import roles as _roles  # noqa: E402

_roles.register(app)


def main() -> None:
    from sqlalchemy.exc import OperationalError

    try:
        app()
    except EmeteraiError as error:
        err.print(f"[bold red]error {error.code}:[/] {error.detail}")
        sys.exit(EXIT_REFUSED)
    except OperationalError as error:
        # The driver's first line names the host and the problem, never the password.
        first_line = str(error.orig).strip().splitlines()[0] if error.orig else "unreachable"
        err.print(f"[bold red]error DATABASE_UNAVAILABLE:[/] {first_line}")
        sys.exit(EXIT_REFUSED)


@bench_app.command("stamp")
def bench_stamp(
    count: Annotated[int, typer.Option(min=5, max=100_000, help="Documents per series.")] = 200,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL; default: SQLite in a temporary directory.")
    ] = None,
    http: Annotated[bool, typer.Option(help="Also measure through a real HTTP server.")] = True,
    http_concurrency: Annotated[int, typer.Option(min=1, max=64)] = 4,
    server_workers: Annotated[int, typer.Option(min=1, max=16)] = 1,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the figures here.")
    ] = None,
) -> None:
    """Stamp a one-page A4 letter and an 800 KB scan; compare with plain pyHanko."""
    from rich.table import Table

    from emeterai.bench.stamp import run_stamp_bench

    with out.status("benchmarking") as status:
        report = run_stamp_bench(
            count=count,
            database_url=database_url,
            http=http,
            http_concurrency=http_concurrency,
            server_workers=server_workers,
            progress=lambda message: status.update(message),
        )
    table = Table(title=f"emeterai bench stamp ({report['database']}, {report['cpus']} CPUs)")
    for column in ("document", "method", "docs/s", "p50 ms", "p99 ms", "x baseline"):
        table.add_column(column, justify="left" if column in ("document", "method") else "right")
    for row in report["series"]:
        table.add_row(
            row["document"],
            row["method"],
            f"{row['docs_per_s']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['ratio_to_baseline']:.2f}",
        )
    out.print(table)
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2))
        out.print(f"figures written to {json_file}")
