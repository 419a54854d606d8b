"""SIGKILL at every step of payment confirmation, then a retry: credited exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.channels.conftest import launch, signed

POINTS = (
    "payment.after_verify",  # signature checked, nothing written
    "payment.after_paid",  # order marked paid, not credited, not committed
    "payment.after_credit",  # everything written, not committed
    "payment.after_commit",  # committed, the answer never sent
)


def test_kill_at_every_step_then_retry_credits_exactly_once(
    server_database: tuple[Path, str],
) -> None:
    data_dir, url = server_database
    channel: dict[str, str] = {}
    orders: list[dict[str, object]] = []
    token = ""

    def payload(placed: dict[str, object]) -> dict[str, object]:
        return {
            "order_id": placed["order_id"],
            "payment_reference": f"bank-{placed['order_id']}",
            "amount_rupiah": placed["amount_rupiah"],
        }

    for index, point in enumerate(POINTS):
        crashing = launch(data_dir, url, EMETERAI_FAULT_POINTS=point)
        server = crashing.server
        try:
            if index == 0:  # the orders, through the first server (orders pass no fault point)
                created = server.cli(
                    "channel", "create", "pos", "--kind", "distributor",
                    "--credit-limit", "100", "--json",
                )  # fmt: skip
                assert created.returncode == 0, created.stderr
                channel = json.loads(created.stdout)
                token = server.user("pelamar@example.id", 0)
                for count in range(1, len(POINTS) + 1):
                    response = httpx.post(
                        f"{server.base_url}/api/v1/channels/orders",
                        json={"email": "pelamar@example.id", "count": count},
                        headers={"Authorization": f"Bearer {channel['api_key']}"},
                    )
                    assert response.status_code == 201, response.text
                    orders.append(response.json())
            # Signed in the past (inside the replay window), so the retry below, signed
            # now, is never byte-identical to the delivery that died after committing.
            body, headers = signed(
                channel["webhook_secret"], payload(orders[index]), int(time.time()) - 30
            )
            try:
                answer = httpx.post(
                    f"{server.base_url}/api/v1/channels/payments",
                    content=body,
                    headers=headers,
                    timeout=30,
                )
                raise AssertionError(f"{point}: the server answered {answer.status_code}")
            except httpx.TransportError:
                pass
            assert crashing.process.wait(timeout=30) == -9, point
        finally:
            crashing.stop()

    running = launch(data_dir, url)
    server = running.server
    try:
        answers = []
        for placed in orders:
            body, headers = signed(channel["webhook_secret"], payload(placed))
            response = httpx.post(
                f"{server.base_url}/api/v1/channels/payments", content=body, headers=headers
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())
        # Only the payment committed before its crash is a duplicate now.
        assert [answer["duplicate"] for answer in answers] == [False, False, False, True]
        quota = httpx.get(
            f"{server.base_url}/api/v1/me/quota", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert quota["available"] == 1 + 2 + 3 + 4
        listed = httpx.get(
            f"{server.base_url}/api/v1/me/orders", headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
        for shown in listed:
            events = [entry["event"] for entry in shown["timeline"]]
            assert (shown["status"], events) == ("credited", ["created", "paid", "credited"])
        assert len(listed) == len(orders)
        audited = server.cli("audit", "--json")
        assert audited.returncode == 0 and json.loads(audited.stdout)["ok"], audited.stdout
    finally:
        running.stop()
