"""Commands of the sales side: channels, orders, reconciliation, refunds, the duty report,
and `bench ledger`. Each parses, calls one use case, and maps the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from emeterai.cli.common import DataDir, err, open_runtime, out, write_atomically
from emeterai.db import transaction

channel_app = typer.Typer(
    help="Sales channels: the shop, distributors, resellers.", no_args_is_help=True
)
order_app = typer.Typer(help="Orders of quota.", no_args_is_help=True)
report_app = typer.Typer(help="Reports for the issuer.", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@channel_app.command("create")
def channel_create(
    name: str,
    kind: Annotated[str, typer.Option(help="shop, distributor or reseller.")],
    fee_rupiah: Annotated[int, typer.Option(help="Fee per stamp, on top of face value.")] = 0,
    refund_fee_rupiah: Annotated[
        int, typer.Option(help="Transfer fee deducted from each refund.")
    ] = 6_500,
    credit_limit: Annotated[
        int, typer.Option(help="Stamps the issuer advances by automatic top-up.")
    ] = 0,
    order_ttl_s: Annotated[int, typer.Option(help="Seconds an order awaits payment.")] = 3600,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Create a channel; print its API key and webhook secret (shown only this once)."""
    from emeterai.channels.management import create_channel

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        created = create_channel(
            session,
            runtime.settings,
            name,
            kind=kind,
            now=runtime.clock.now(),
            fee_rupiah=fee_rupiah,
            refund_fee_rupiah=refund_fee_rupiah,
            credit_limit=credit_limit,
            order_ttl_s=order_ttl_s,
        )
    if as_json:
        print(json.dumps(created.as_dict()))
        return
    err.print(f"channel {name} created; its API key and webhook secret are shown only once:")
    print(f"id: {created.channel.id}\napi_key: {created.api_key}")
    print(f"webhook_secret: {created.webhook_secret}")


@channel_app.command("list")
def channel_list(as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """Every channel with its stock and credit."""
    from emeterai.channels.management import list_channels, stock_of

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        stocks = [stock_of(session, channel).as_dict() for channel in list_channels(session)]
    if as_json:
        print(json.dumps(stocks))
        return
    for stock in stocks:
        limit = "unlimited" if stock["credit_limit"] is None else stock["credit_limit"]
        out.print(
            f"{stock['channel']} ({stock['kind']}): stock {stock['stock']},"
            f" credit {stock['credit_used']} of {limit}"
        )


@channel_app.command("stock")
def channel_stock(name: str, as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """A channel's stock, credit, and how many stamps it can sell now."""
    from emeterai.channels.management import channel_by_name, stock_of

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        stock = stock_of(session, channel_by_name(session, name)).as_dict()
    print(json.dumps(stock) if as_json else stock)


@channel_app.command("rotate-secret")
def channel_rotate_secret(
    name: str,
    overlap_s: Annotated[
        int, typer.Option(help="Seconds the old secret (and key) stay valid.")
    ] = 86_400,
    api_key: Annotated[bool, typer.Option("--api-key", help="Also rotate the API key.")] = False,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """A new webhook secret (and with --api-key a new API key); the old stay valid a while."""
    from emeterai.channels.management import rotate_secrets

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        rotated = rotate_secrets(
            session,
            runtime.settings,
            name,
            now=runtime.clock.now(),
            overlap_s=overlap_s,
            api_key=api_key,
        )
    if as_json:
        print(json.dumps(rotated.as_dict()))
        return
    err.print(f"the old credentials stay valid until {rotated.old_valid_until.isoformat()}")
    print(f"webhook_secret: {rotated.webhook_secret}")
    if rotated.api_key:
        print(f"api_key: {rotated.api_key}")


@channel_app.command("credit-limit")
def channel_credit_limit(name: str, stamps: int, data_dir: DataDir = None) -> None:
    """Set how many stamps the issuer advances to NAME by automatic top-up."""
    from emeterai.channels.management import set_credit_limit

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        channel = set_credit_limit(session, name, stamps)
    out.print(f"{channel.name}: credit limit {channel.credit_limit}, used {channel.credit_used}")


@channel_app.command("deposit")
def channel_deposit(
    name: str,
    count: int,
    reference: Annotated[str, typer.Option(help="Unique reference; a repeat changes nothing.")],
    data_dir: DataDir = None,
) -> None:
    """The channel paid for COUNT stamps in advance: they move from supply to its stock."""
    from emeterai.channels.management import deposit

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        stock = deposit(session, name, count, reference=reference, now=runtime.clock.now())
    out.print(f"{stock.channel}: stock {stock.stock}, credit used {stock.credit_used}")


@channel_app.command("rejections")
def channel_rejections(
    name: Annotated[str | None, typer.Argument(help="Only this channel.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Refused payment confirmations, newest first: what the operator should look at."""
    from emeterai.channels.management import channel_by_name
    from emeterai.channels.payments import list_rejections

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        channel_id = channel_by_name(session, name).id if name else None
        rows = [
            {
                "at": row.received_at.isoformat(),
                "code": row.code,
                "channel_id": row.channel_id,
                "order_id": row.order_id,
                "payment_reference": row.payment_reference,
                "amount_rupiah": row.amount_rupiah,
                "detail": row.detail,
            }
            for row in list_rejections(session, channel_id, limit=limit)
        ]
    if as_json:
        print(json.dumps(rows))
        return
    for row in rows:
        out.print(
            f"{row['at']} {row['code']} order {row['order_id']}: {row['detail']}", markup=False
        )


@order_app.command("show")
def order_show(order_id: str, as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """An order's status and timeline."""
    from emeterai.channels.orders import expire_orders, get_order, view_of

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        order = get_order(session, order_id)
        expire_orders(session, now=runtime.clock.now(), account_id=order.account_id)
        session.refresh(order)
        view = view_of(session, order).as_dict()
    if as_json:
        print(json.dumps(view))
        return
    out.print(
        f"{view['order_id']}: {view['status']}, {view['count']} stamp(s), Rp{view['amount_rupiah']}"
    )
    for entry in view["timeline"]:  # type: ignore[attr-defined]
        out.print(f"  {entry['at']} {entry['event']} {entry['detail']}", markup=False)


def reconcile(
    channel: str,
    settlement: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    apply: Annotated[bool, typer.Option("--apply", help="Credit what was settled, once.")] = False,
    report: Annotated[
        Path | None, typer.Option(help="Write the findings to FILE.csv or FILE.json.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Compare CHANNEL's settlement file with the ledger; --apply credits what is missing."""
    from emeterai.channels.reconciliation import FILE_BYTES_MAX, parse_settlement
    from emeterai.channels.reconciliation import reconcile as run
    from emeterai.errors import SettlementFileInvalid

    if settlement.stat().st_size > FILE_BYTES_MAX:
        raise SettlementFileInvalid(f"{settlement} is larger than {FILE_BYTES_MAX} bytes")
    lines = parse_settlement(settlement.read_bytes())
    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        result = run(session, channel, lines, apply=apply, now=runtime.clock.now())
    if report is not None:
        text = (
            result.as_csv() if report.suffix == ".csv" else json.dumps(result.as_dict(), indent=2)
        )
        write_atomically(report, text.encode())
    summary = result.as_dict()
    out.print(
        f"{summary['lines']} settled, {summary['matched']} matched, {summary['repaired']}"
        f" repaired, {result.gaps} finding(s){'' if apply else ' (dry run)'}"
    )
    for finding in result.findings:
        out.print(
            f"  {finding.kind}{' (repaired)' if finding.repaired else ''}:"
            f" {finding.payment_reference} order {finding.order_id} - {finding.detail}",
            markup=False,
        )


def refund(order_id: str, as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """Refund the unused quota of ORDER, full price less the channel's transfer fee."""
    from emeterai.channels.refunds import refund_order

    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        result = refund_order(session, order_id, now=runtime.clock.now())
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    out.print(
        f"order {result.order_id}: {result.refunded_count} stamp(s) refunded,"
        f" Rp{result.refund_rupiah} (less Rp{result.transfer_fee_rupiah});"
        f" {result.kept_count} used stamp(s) kept{' (already refunded)' if result.replayed else ''}"
    )


@report_app.command("duty")
def report_duty(
    start: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD (UTC).")],
    end: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD (UTC), included.")],
    by: Annotated[str, typer.Option(help="day or channel.")] = "day",
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Stamps sold, refunded and used, duty owed and fees, from the ledger."""
    from rich.table import Table

    from emeterai.channels.reports import duty_report, parse_period

    first, last = parse_period(start, end)
    with open_runtime(data_dir) as runtime, transaction(runtime.sessions) as session:
        result = duty_report(session, first, last, by=by)
    if as_csv:
        print(result.as_csv(), end="")
        return
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    table = Table(title=f"duty {first} to {last} by {by} (Rp10,000 a stamp)")
    for column in ("", "sold", "refunded", "used", "duty owed Rp", "fees Rp", "refund fees Rp"):
        table.add_column(column, justify="right")
    for row in (*result.rows, result.total):
        table.add_row(
            row.key,
            str(row.stamps_sold),
            str(row.stamps_refunded),
            "-" if row.stamps_used is None else str(row.stamps_used),
            f"{row.duty_owed_rupiah:,}",
            f"{row.fees_rupiah:,}",
            f"{row.refund_fees_rupiah:,}",
        )
    out.print(table)


def bench_ledger(
    database_url: Annotated[
        str | None,
        typer.Option(
            help="An empty PostgreSQL database; default: SQLite in a temporary directory."
        ),
    ] = None,
    seconds: Annotated[float, typer.Option(min=0.5, max=600, help="Per series.")] = 5.0,
    clients: Annotated[str, typer.Option(help="Concurrent clients, comma-separated.")] = "1,8",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the figures here.")
    ] = None,
) -> None:
    """Ledger transfers/s: purchases (confirm and credit) and the stamp reserve/post pair."""
    from rich.table import Table

    from emeterai.bench.ledger import run_ledger_bench

    counts = [int(part) for part in clients.split(",") if part.strip()]
    if not counts or any(not 1 <= count <= 64 for count in counts):
        raise typer.BadParameter("clients are 1 to 64, comma-separated")
    with out.status("benchmarking") as status:
        report = run_ledger_bench(
            database_url=database_url,
            seconds=seconds,
            clients=counts,
            progress=lambda message: status.update(message),
        )
    table = Table(title=f"emeterai bench ledger ({report['database']}, {report['cpus']} CPUs)")
    for column in ("operation", "clients", "ops", "ops/s", "transfers/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    for row in report["series"]:
        table.add_row(
            row["operation"],
            str(row["clients"]),
            str(row["ops"]),
            f"{row['ops_per_s']:.1f}",
            f"{row['transfers_per_s']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
        )
    out.print(table)
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2))
        out.print(f"figures written to {json_file}")


def register(app: typer.Typer) -> None:
    app.add_typer(channel_app, name="channel")
    app.add_typer(order_app, name="order")
    app.add_typer(report_app, name="report")
    app.command("reconcile")(reconcile)
    app.command("refund")(refund)
    for group in app.registered_groups:
        if group.name == "bench" and group.typer_instance is not None:
            group.typer_instance.command("ledger")(bench_ledger)
