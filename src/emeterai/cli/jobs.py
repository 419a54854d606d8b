"""`emeterai worker`, `emeterai jobs ...`, `emeterai retention purge`, `emeterai bench bulk`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from emeterai.cli.common import DataDir, err, open_runtime, out, write_atomically
from emeterai.config import load_settings
from emeterai.db import transaction

if TYPE_CHECKING:
    from emeterai.jobs.service import JobProgress

jobs_app = typer.Typer(help="Bulk stamping jobs.", no_args_is_help=True)
retention_app = typer.Typer(help="Deleting stamped documents past retention.", no_args_is_help=True)

WATCH_INTERVAL_S = 0.5


def worker(
    data_dir: DataDir = None,
    processes: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Stamp queued bulk documents until SIGTERM/SIGINT (the document in hand is finished)."""
    from emeterai.jobs.config import JobSettings
    from emeterai.jobs.runner import configure_logging, run_workers
    from emeterai.runtime import build_runtime

    settings = load_settings(data_dir)
    build_runtime(settings).close()  # refuse to start on an uninitialised data directory
    configure_logging()
    run_workers(settings, JobSettings(), processes=processes)


@jobs_app.command("submit")
def jobs_submit(
    files: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="PDFs, or ZIPs of PDFs."),
    ],
    account: Annotated[str, typer.Option(help="E-mail of the account that pays.")],
    page: Annotated[int, typer.Option(min=1, help="Shared page, from 1.")] = 1,
    x: Annotated[float | None, typer.Option("--x", help="Shared x, points from the left.")] = None,
    y: Annotated[
        float | None, typer.Option("--y", help="Shared y, points from the bottom.")
    ] = None,
    positions: Annotated[
        Path | None,
        typer.Option(help='JSON: a list in order, or {"name.pdf": {"page": 1, "x": .., "y": ..}}.'),
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="POSTed (HMAC-signed) when done.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="A repeat returns the same job.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Queue a batch: its quota is reserved now, each document is charged once stamped."""
    from emeterai.accounts import account_by_email
    from emeterai.errors import BatchTooLarge
    from emeterai.jobs.config import JobSettings
    from emeterai.jobs.intake import Bounds, bulk_documents
    from emeterai.jobs.service import BulkRequest, shared_position, submit_bulk

    limits = JobSettings()
    with open_runtime(data_dir) as runtime:
        settings = runtime.settings
        total = sum(path.stat().st_size for path in files)
        if total > limits.bytes_max:
            raise BatchTooLarge(f"the files hold {total} bytes; the limit is {limits.bytes_max}")
        documents = bulk_documents(
            [(path.name, path.read_bytes()) for path in files],
            bounds=Bounds(limits.documents_max, limits.bytes_max, settings.upload_bytes_max),
            shared=shared_position(page, x, y),
            positions_json=positions.read_text() if positions else None,
        )
        with transaction(runtime.sessions) as session:
            account_id = account_by_email(session, account).id
        submitted = submit_bulk(
            runtime.sessions,
            runtime.blobs,
            BulkRequest(
                account_id=account_id,
                documents=documents,
                webhook_url=webhook_url,
                idempotency_key=idempotency_key,
            ),
            limits=limits,
            document_bytes_max=settings.upload_bytes_max,
            clock=runtime.clock,
        )
    if as_json:
        print(
            json.dumps(
                {
                    "id": submitted.job_id,
                    "item_count": submitted.item_count,
                    "webhook_secret": submitted.webhook_secret,
                    "replayed": submitted.replayed,
                }
            )
        )
        return
    err.print(f"job {submitted.job_id}: {submitted.item_count} document(s) queued")
    if submitted.webhook_secret:
        err.print(f"webhook secret (shown once): {submitted.webhook_secret}")
    print(submitted.job_id)


@jobs_app.command("show")
def jobs_show(
    job_id: int,
    watch: Annotated[bool, typer.Option(help="Follow the progress until the job ends.")] = False,
    report: Annotated[bool, typer.Option(help="One line per document.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """A job's progress (a Rich progress bar with --watch), and its report with --report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from emeterai.jobs.service import ReportLine, job_progress, job_report

    lines: list[ReportLine] = []
    with open_runtime(data_dir) as runtime:

        def read() -> JobProgress:
            with transaction(runtime.sessions) as session:
                return job_progress(session, job_id, account_id=None)

        progress = read()
        if watch and not as_json:
            columns = (TextColumn(f"job {job_id}"), BarColumn(), MofNCompleteColumn())
            with Progress(*columns, TextColumn("{task.fields[detail]}"), console=out) as bar:
                task = bar.add_task("stamping", total=progress.item_count, detail="")
                while True:
                    bar.update(task, completed=progress.done, detail=_detail(progress))
                    if progress.state in ("completed", "dead"):
                        break
                    time.sleep(WATCH_INTERVAL_S)
                    progress = read()
        if report:
            with transaction(runtime.sessions) as session:
                lines = job_report(session, job_id, account_id=None)
    if as_json:
        body: dict[str, object] = dict(progress.as_dict())
        if report:
            body["documents"] = [line.as_dict() for line in lines]
        print(json.dumps(body))
        return
    if not watch:
        colour = {"completed": "green", "dead": "red"}.get(progress.state, "yellow")
        out.print(
            f"job {progress.job_id}: [{colour}]{progress.state}[/]  {progress.done}/"
            f"{progress.item_count} done  {_detail(progress)}"
        )
    if report:
        table = Table()
        for column in ("#", "name", "state", "serial / error", "attempts"):
            table.add_column(column)
        for line in lines:
            outcome = line.serial or (line.error_code or line.detail or "")
            table.add_row(str(line.position), line.name, line.state, outcome, str(line.attempts))
        out.print(table)


def _detail(progress: JobProgress) -> str:
    parts = [f"{progress.stamped} stamped"]
    for label, count in (
        ("failed", progress.failed),
        ("dead-lettered", progress.dead),
        ("running", progress.running),
        ("queued", progress.queued),
    ):
        if count:
            parts.append(f"{count} {label}")
    return ", ".join(parts)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[
        str | None, typer.Option(help="queued, running, completed or dead (the dead letters).")
    ] = None,
    account: Annotated[str | None, typer.Option(help="Only this account's jobs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Jobs, newest first."""
    from rich.table import Table

    from emeterai.accounts import account_by_email
    from emeterai.jobs.service import list_jobs

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        account_id = account_by_email(session, account).id if account else None
        jobs = list_jobs(session, account_id=account_id, state=state, limit=limit)
    if as_json:
        print(json.dumps([{**job.as_dict(), "account_id": job.account_id} for job in jobs]))
        return
    table = Table()
    for column in ("id", "account", "state", "done", "detail", "created"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            str(job.job_id),
            str(job.account_id),
            job.state,
            f"{job.done}/{job.item_count}",
            _detail(job),
            job.created_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@jobs_app.command("retry")
def jobs_retry(job_id: int, data_dir: DataDir = None) -> None:
    """Send a dead-lettered job's dead documents back to the queue."""
    from emeterai.jobs.service import retry_job

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        count = retry_job(session, job_id, now=runtime.clock.now())
    out.print(f"job {job_id}: {count} document(s) queued again")


@jobs_app.command("results")
def jobs_results(
    job_id: int,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the ZIP.")],
    data_dir: DataDir = None,
) -> None:
    """Write the stamped PDFs and report.csv as a ZIP."""
    import io

    from emeterai.jobs.service import job_report, write_results_zip

    with open_runtime(data_dir) as runtime:
        with transaction(runtime.sessions) as session:
            lines = job_report(session, job_id, account_id=None)
        buffer = io.BytesIO()
        count = write_results_zip(lines, runtime.blobs, buffer)
    write_atomically(output, buffer.getvalue())
    err.print(f"{count} stamped document(s) written to {output}")


@retention_app.command("purge")
def retention_purge(
    days: Annotated[
        int | None,
        typer.Option(min=1, help="Override EMETERAI_STAMP_RETENTION_DAYS for this run."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Delete stamped documents and batch sources past retention (workers do it hourly)."""
    from emeterai.jobs.retention import purge_retention

    with open_runtime(data_dir) as runtime:
        report = purge_retention(
            runtime.sessions,
            runtime.blobs,
            settings=runtime.settings,
            clock=runtime.clock,
            retention_days=days,
        )
    out.print(
        f"{report.stamps} stamped document(s) and the sources of {report.jobs} job(s) past"
        f" retention; {report.blobs_deleted} file(s) deleted"
    )


def bench_bulk(
    documents: Annotated[int, typer.Option(min=4, max=100_000, help="Documents per run.")] = 120,
    workers: Annotated[str, typer.Option(help="Worker process counts to compare.")] = "1,2,4",
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL server URL; a scratch database is created on it."),
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the figures here.")
    ] = None,
) -> None:
    """Bulk throughput with 1, 2 and 4 worker processes on one PostgreSQL."""
    from rich.table import Table

    from emeterai.bench.bulk import DEFAULT_SERVER_URL, run_bulk_bench

    counts = [int(part) for part in workers.split(",") if part.strip()]
    with out.status("benchmarking") as status:
        report = run_bulk_bench(
            documents=documents,
            worker_counts=counts,
            server_url=database_url or DEFAULT_SERVER_URL,
            progress=lambda message: status.update(message),
        )
    table = Table(
        title=f"emeterai bench bulk ({report['documents']} documents, {report['cpus']} CPUs)"
    )
    for column in ("workers", "seconds", "docs/s", "x 1 worker"):
        table.add_column(column, justify="right")
    for row in report["runs"]:
        table.add_row(
            str(row["workers"]),
            f"{row['seconds']:.2f}",
            f"{row['docs_per_s']:.1f}",
            f"{row['scaling']:.2f}",
        )
    out.print(table)
    out.print(
        f"stamped exactly once: {report['stamped_exactly_once']}; audit ok: {report['audit_ok']}"
    )
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2))
        out.print(f"figures written to {json_file}")
    if not (report["stamped_exactly_once"] and report["audit_ok"]):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    from emeterai.cli import bench_app

    app.command("worker")(worker)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(retention_app, name="retention")
    bench_app.command("bulk")(bench_bulk)
