"""The channel contract through a real `emeterai serve` (two workers), on both databases."""

from __future__ import annotations

import csv
import io
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import Server
from tests.channels.conftest import signed

_counter = iter(range(1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}-{random.randrange(10**6)}"


def make_channel(server: Server, kind: str = "reseller", **options: str) -> dict[str, Any]:
    arguments = ["channel", "create", unique(kind), "--kind", kind, "--json"]
    for name, value in options.items():
        arguments += [f"--{name.replace('_', '-')}", value]
    created = server.cli(*arguments)
    assert created.returncode == 0, created.stderr
    channel: dict[str, Any] = json.loads(created.stdout)
    assert set(channel) == {"id", "api_key", "webhook_secret"}
    channel["name"] = arguments[2]
    return channel


def make_user(server: Server) -> tuple[str, str]:
    email = f"{unique('pelamar')}@example.id"
    return email, server.user(email, 0)


def order(server: Server, channel: dict[str, Any], email: str, count: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {channel['api_key']}"}
    for _ in range(20):  # as docs/admission.md says: after a 429, wait Retry-After, repeat
        response = httpx.post(
            f"{server.base_url}/api/v1/channels/orders",
            json={"email": email, "count": count},
            headers=headers,
        )
        if response.status_code != 429:
            break
        headers["X-Queue-Ticket"] = response.headers.get("x-queue-ticket", "")
        time.sleep(float(response.headers["retry-after"]))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "awaiting_payment" and {"order_id", "amount_rupiah"} <= set(body)
    return body


def confirm(
    server: Server,
    channel: dict[str, Any],
    payload: dict[str, object],
    *,
    timestamp: int | None = None,
    client: httpx.Client | None = None,
    secret: str | None = None,
    api_key: str | None = None,
) -> httpx.Response:
    body, headers = signed(secret or channel["webhook_secret"], payload, timestamp)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    poster = client or httpx
    return poster.post(
        f"{server.base_url}/api/v1/channels/payments", content=body, headers=headers, timeout=60
    )


def quota(server: Server, token: str) -> int:
    response = httpx.get(
        f"{server.base_url}/api/v1/me/quota", headers={"Authorization": f"Bearer {token}"}
    )
    available: int = response.json()["available"]
    return available


def credited_events(server: Server, token: str, order_id: str) -> int:
    shown = httpx.get(
        f"{server.base_url}/api/v1/me/orders/{order_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert shown.status_code == 200, shown.text
    return sum(entry["event"] == "credited" for entry in shown.json()["timeline"])


def audit_ok(server: Server) -> None:
    audited = server.cli("audit", "--json")
    assert audited.returncode == 0, audited.stdout
    assert json.loads(audited.stdout)["ok"]


def test_one_confirmation_sent_100_times_in_parallel_credits_once(sandbox_server: Server) -> None:
    server = sandbox_server
    channel = make_channel(server, fee_rupiah="1000", credit_limit="100")
    email, token = make_user(server)
    placed = order(server, channel, email, 3)
    assert placed["amount_rupiah"] == 3 * 11_000
    payload = {
        "order_id": placed["order_id"],
        "payment_reference": "bank-100",
        "amount_rupiah": placed["amount_rupiah"],
    }
    now = int(time.time())
    # Each delivery is signed anew, as a provider's retries are (a byte-identical copy is a
    # replay, refused: see the rejections test).
    limits = httpx.Limits(max_connections=32)

    def deliver(i: int, client: httpx.Client) -> httpx.Response:
        """As a provider delivers: a 429 (the server sheds load) is retried after its
        Retry-After, signed anew (a later timestamp, still inside the replay window)."""
        answer = confirm(server, channel, payload, timestamp=now - i, client=client)
        for attempt in range(1, 4):
            if answer.status_code != 429:
                break
            time.sleep(float(answer.headers.get("retry-after", "1")))
            stamp = now + i + 100 * attempt
            answer = confirm(server, channel, payload, timestamp=stamp, client=client)
        return answer

    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda i: deliver(i, client), range(100)))
    assert [answer.status_code for answer in answers] == [200] * 100, answers[0].text
    bodies = [answer.json() for answer in answers]
    assert sum(not body["duplicate"] for body in bodies) == 1
    assert {(body["order_id"], body["status"]) for body in bodies} == {
        (placed["order_id"], "credited")
    }
    assert quota(server, token) == 3
    assert credited_events(server, token, placed["order_id"]) == 1
    audit_ok(server)


def test_confirmations_in_random_order_with_others_credit_each_once(
    sandbox_server: Server,
) -> None:
    server = sandbox_server
    channel = make_channel(server, "distributor", credit_limit="1000")
    deposit = server.cli("channel", "deposit", channel["name"], "5", "--reference", "dep-1")
    assert deposit.returncode == 0, deposit.stderr
    email, token = make_user(server)
    orders = [order(server, channel, email, count) for count in (1, 2, 3, 4, 5, 1, 2, 3)]
    now = int(time.time())
    deliveries = [
        (
            {
                "order_id": placed["order_id"],
                "payment_reference": f"ref-{placed['order_id']}",
                "amount_rupiah": placed["amount_rupiah"],
            },
            now - copy,
        )
        for placed in orders
        for copy in range(8)
    ]
    random.shuffle(deliveries)
    with httpx.Client() as client, ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(
            pool.map(
                lambda item: confirm(server, channel, item[0], timestamp=item[1], client=client),
                deliveries,
            )
        )
    assert {answer.status_code for answer in answers} == {200}
    assert sum(not answer.json()["duplicate"] for answer in answers) == len(orders)
    assert quota(server, token) == sum(placed_count for placed_count in (1, 2, 3, 4, 5, 1, 2, 3))
    stock = httpx.get(
        f"{server.base_url}/api/v1/channels/me/stock",
        headers={"Authorization": f"Bearer {channel['api_key']}"},
    ).json()
    assert (stock["stock"], stock["credit_used"]) == (0, 21 - 5)
    audit_ok(server)


def test_every_rejection_has_its_code_and_credits_nothing(sandbox_server: Server) -> None:
    server = sandbox_server
    ours, theirs = make_channel(server, credit_limit="10"), make_channel(server, credit_limit="10")
    email, token = make_user(server)
    placed = order(server, ours, email, 2)
    foreign = order(server, theirs, email, 1)
    good = {
        "order_id": placed["order_id"],
        "payment_reference": "r-1",
        "amount_rupiah": placed["amount_rupiah"],
    }
    now = int(time.time())
    cases = [
        (401, "BAD_SIGNATURE", confirm(server, ours, good, secret="whsec_not-the-secret")),
        (401, "STALE_TIMESTAMP", confirm(server, ours, good, timestamp=now - 600)),
        (
            422,
            "WRONG_AMOUNT",
            confirm(server, ours, {**good, "amount_rupiah": placed["amount_rupiah"] - 1}),
        ),
        (404, "UNKNOWN_ORDER", confirm(server, ours, {**good, "order_id": "ord_unknown"})),
        (
            403,
            "ORDER_OF_ANOTHER_CHANNEL",
            confirm(
                server,
                ours,
                {**good, "order_id": foreign["order_id"], "amount_rupiah": 10_000},
                api_key=ours["api_key"],
            ),
        ),
        (
            401,
            "BAD_SIGNATURE",  # another channel's order, signed by us without our key
            confirm(server, ours, {**good, "order_id": foreign["order_id"]}),
        ),
        (422, "MALFORMED_CONFIRMATION", confirm(server, ours, {"order_id": placed["order_id"]})),
    ]
    for status, code, response in cases:
        assert response.status_code == status, (code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == code
    assert quota(server, token) == 0
    # A replay: the very same signed bytes again, even after they were accepted.
    body, headers = signed(ours["webhook_secret"], good, now)
    url = f"{server.base_url}/api/v1/channels/payments"
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    replay = httpx.post(url, content=body, headers=headers)
    assert replay.status_code == 409 and replay.json()["code"] == "REPLAYED_CONFIRMATION"
    assert quota(server, token) == 2
    listed = server.cli("channel", "rejections", ours["name"], "--json")
    codes = {row["code"] for row in json.loads(listed.stdout)}
    assert codes == ({code for _, code, _ in cases} | {"REPLAYED_CONFIRMATION"}) - {"UNKNOWN_ORDER"}
    audit_ok(server)


def test_shop_order_sandbox_payment_and_scoping(sandbox_server: Server) -> None:
    server = sandbox_server
    _, token = make_user(server)
    _, stranger = make_user(server)
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{server.base_url}/api/v1/me/orders", json={"count": 2}, headers=auth)
    assert created.status_code == 201, created.text
    shop_order = created.json()
    assert shop_order["payment"]["sandbox"] is True
    pay_url = server.base_url + shop_order["payment"]["url"]
    failed = httpx.post(pay_url, json={"outcome": "fail"}, headers=auth)
    assert failed.json() == {"sandbox": True, "outcome": "fail", "order_id": shop_order["order_id"]}
    paid = httpx.post(pay_url, json={"outcome": "confirm", "duplicates": 3}, headers=auth)
    deliveries = paid.json()["deliveries"]
    assert len(deliveries) == 4 and all(
        d["sandbox"] and d["status"] == "credited" for d in deliveries
    )
    assert sum(not d["duplicate"] for d in deliveries) == 1
    assert quota(server, token) == 2
    mine = httpx.get(f"{server.base_url}/api/v1/me/orders", headers=auth).json()["items"]
    assert [(o["order_id"], o["status"]) for o in mine] == [(shop_order["order_id"], "credited")]
    events = [entry["event"] for entry in mine[0]["timeline"]]
    assert events == ["created", "payment_failed", "paid", "credited"]
    hidden = httpx.get(
        f"{server.base_url}/api/v1/me/orders/{shop_order['order_id']}",
        headers={"Authorization": f"Bearer {stranger}"},
    )
    assert hidden.status_code == 404 and hidden.json()["code"] == "ORDER_NOT_FOUND"
    assert (
        httpx.get(
            f"{server.base_url}/api/v1/me/orders", headers={"Authorization": f"Bearer {stranger}"}
        ).json()["items"]
        == []
    )
    audit_ok(server)


def test_refund_reconcile_and_duty_report_commands(sandbox_server: Server, tmp_path: Path) -> None:
    server = sandbox_server
    channel = make_channel(server, fee_rupiah="500", credit_limit="50")
    email, token = make_user(server)
    paid = order(server, channel, email, 4)
    gap = order(server, channel, email, 1)
    reference = {"order_id": paid["order_id"], "payment_reference": "s-1"}
    assert (
        confirm(server, channel, {**reference, "amount_rupiah": paid["amount_rupiah"]}).status_code
        == 200
    )
    settled_at = datetime.now(UTC).isoformat()
    settlement = tmp_path / "settlement.csv"
    with settlement.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["payment_reference", "order_id", "amount_rupiah", "settled_at"])
        writer.writerow(["s-1", paid["order_id"], paid["amount_rupiah"], settled_at])
        writer.writerow(["s-2", gap["order_id"], gap["amount_rupiah"], settled_at])
        writer.writerow(["s-3", gap["order_id"], 1, settled_at])
    dry = server.cli("reconcile", channel["name"], str(settlement))
    assert dry.returncode == 0 and "settled_not_credited: s-2" in dry.stdout
    assert quota(server, token) == 4
    report = tmp_path / "report.json"
    applied = server.cli(
        "reconcile", channel["name"], str(settlement), "--apply", "--report", str(report)
    )
    assert applied.returncode == 0, applied.stderr
    findings = json.loads(report.read_text())["findings"]
    assert [(f["kind"], f["repaired"]) for f in findings] == [
        ("settled_not_credited", True),
        ("wrong_amount", False),
    ]
    assert quota(server, token) == 5
    again = tmp_path / "again.csv"
    server.cli("reconcile", channel["name"], str(settlement), "--apply", "--report", str(again))
    rows = list(csv.DictReader(io.StringIO(again.read_text())))
    assert [row["kind"] for row in rows] == ["wrong_amount"]
    assert quota(server, token) == 5

    refunded = httpx.post(
        f"{server.base_url}/api/v1/channels/orders/{paid['order_id']}/refund",
        headers={"Authorization": f"Bearer {channel['api_key']}"},
    )
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["refunded_count"] == 4
    assert refunded.json()["refund_rupiah"] == 4 * 10_500 - 6_500
    cli_refund = server.cli("refund", gap["order_id"], "--json")
    assert json.loads(cli_refund.stdout)["refunded_count"] == 1
    assert quota(server, token) == 0
    today = datetime.now(UTC).date().isoformat()
    duty = server.cli("report", "duty", "--from", today, "--to", today, "--by", "channel", "--csv")
    assert duty.returncode == 0, duty.stderr
    row = next(
        r for r in csv.DictReader(io.StringIO(duty.stdout)) if r["channel"] == channel["name"]
    )
    assert (row["stamps_sold"], row["stamps_refunded"], row["duty_owed_rupiah"]) == ("5", "5", "0")
    assert row["refund_fees_rupiah"] == str(2 * 6_500)
    audit_ok(server)
