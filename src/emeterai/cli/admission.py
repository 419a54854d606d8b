"""`emeterai bench spike`: the deadline surge against a real server (docs/admission.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from emeterai.cli.common import out


def _phase(figures: dict[str, float] | None) -> str:
    if not figures:
        return "-"
    text = (
        f"{figures['finished_per_s']:.2f} ({figures['ratio']:.3f}), "
        f"{figures['from_s']:.0f}-{figures['to_s']:.0f} s"
    )
    lock = figures.get("db_lock_busy")
    return text if lock is None else f"{text}, lock {lock:.2f}"


def register(app: typer.Typer) -> None:
    from emeterai.cli import bench_app

    bench_app.command("spike")(bench_spike)


def bench_spike(
    duration_s: Annotated[
        float, typer.Option(min=5, max=3600, help="Seconds of rising arrivals.")
    ] = 30.0,
    overload: Annotated[
        float, typer.Option(min=1, max=1000, help="Peak arrival rate, times the capacity.")
    ] = 20.0,
    workers: Annotated[int, typer.Option(min=0, max=64, help="Server processes (0: CPUs).")] = 0,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL; default: SQLite in a temporary directory.")
    ] = None,
    no_admission: Annotated[
        bool, typer.Option("--no-admission", help="Also run without the waiting room (2024).")
    ] = False,
    capacity_s: Annotated[
        float, typer.Option(min=6, max=600, help="Seconds of the capacity measurement.")
    ] = 20.0,
    load_processes: Annotated[int, typer.Option(min=1, max=16)] = 2,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the figures here.")
    ] = None,
    plot_file: Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot here.")] = None,
    admission_setting: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=VALUE: run the waiting room with EMETERAI_ADMISSION_NAME=VALUE"
            " (repeatable; e.g. rate_per_s=9 pins the rate)."
        ),
    ] = None,
) -> None:
    """Replay a CASN-shaped surge up to OVERLOAD x the measured capacity; report fairness."""
    import os

    from pydantic import ValidationError
    from rich.table import Table

    from emeterai.admission.settings import AdmissionSettings
    from emeterai.bench.spike import CAPACITY_DRIFT_MAX, acceptance, plot, run_spike

    tuned: dict[str, str] = {}
    for entry in admission_setting or []:
        name, equals, value = entry.partition("=")
        if not equals or name.lower() not in AdmissionSettings.model_fields:
            raise typer.BadParameter(f"{entry!r}: expected NAME=VALUE, NAME a waiting room setting")
        tuned[name.lower()] = value
    try:  # checked here, not when the server refuses to start
        AdmissionSettings(**tuned)  # type: ignore[arg-type]
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from None
    with out.status("benchmarking") as status:
        report = run_spike(
            duration_s=duration_s,
            overload=overload,
            workers=workers or (os.cpu_count() or 1),
            database_url=database_url,
            compare_no_admission=no_admission,
            load_processes=load_processes,
            capacity_s=capacity_s,
            admission_settings=tuned,
            progress=lambda message: status.update(message),
        )
    runs: list[tuple[str, dict[str, Any]]] = [("admission", report)]
    if "no_admission" in report:
        runs.append(("no admission (2024)", report["no_admission"]))
    table = Table(title=f"emeterai bench spike ({report['database']}, {report['cpus']} CPUs)")
    table.add_column("figure")
    for name, _ in runs:
        table.add_column(name, justify="right")
    keys = (
        "capacity_per_s",
        "goodput_per_s",
        "goodput_ratio",
        "applicants",
        "unfinished_applicants",
        "admitted_p50_ms",
        "admitted_p99_ms",
        "wait_p50_s",
        "wait_p99_s",
        "fifo_violations",
        "server_errors_5xx",
        "resets",
        "timeouts",
        "quota_lost",
        "audit_ok",
    )
    keys_of_the_bar = (
        "capacity_before_per_s",
        "capacity_after_per_s",
        "capacity_drift",
        "capacity_db_lock_busy",
    )
    for key in keys_of_the_bar:
        table.add_row(key, *(str(report.get(key)) for _ in runs))
    for key in keys:
        table.add_row(key, *(str(run.get(key)) for _, run in runs))
    for phase in ("ramp", "surge", "drain"):
        table.add_row(
            f"{phase}: finished/s (ratio), lock busy",
            *(_phase(run.get("phases", {}).get(phase)) for _, run in runs),
        )
    table.add_row("status_counts", *(json.dumps(run["status_counts"]) for _, run in runs))
    out.print(table)
    if report.get("capacity_drift", 0.0) > CAPACITY_DRIFT_MAX:
        out.print(
            f"[yellow]warning[/]: the two capacity measurements differ by "
            f"{report['capacity_drift']:.0%} of their mean: the machine's speed changed "
            "during the run, so its goodput ratio is unreliable; run it again"
        )
    checks = acceptance(report)
    report["acceptance"] = checks
    for check, passed in checks.items():
        out.print(f"{'[green]pass[/]' if passed else '[red]FAIL[/]'} {check}")
    if plot_file is not None:
        plot(report, plot_file)
        out.print(f"plot written to {plot_file}")
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2))
        out.print(f"figures written to {json_file}")
