"""The waiting room end to end: a real `emeterai serve` with two workers, on both databases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from emeterai.pdf.samples import letter_a4
from tests.api.conftest import Server, start_server
from tests.conftest import (
    create_postgres_database,
    drop_postgres_database,
)


def _start(data_dir: Path, database_url: str) -> Iterator[Server]:
    yield from start_server(
        data_dir,
        database_url,
        workers=2,
        extra_env={
            "EMETERAI_ADMISSION_ENABLED": "true",
            "EMETERAI_ADMISSION_HOLD_S": "0",
            "EMETERAI_PAYMENTS_SANDBOX": "true",
        },
        serve_options=("--admission-rate", "0.5"),
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("admission") / "var"
    if request.param == "sqlite":
        yield from _start(data_dir, f"sqlite:///{data_dir / 'emeterai.db'}")
        return
    url = create_postgres_database()
    try:
        yield from _start(data_dir, url)
    finally:
        drop_postgres_database(url)


def users(server: Server, names: list[str]) -> list[str]:
    """Accounts with two stamps each, through the use cases (the CLI is slower)."""
    from emeterai.accounts import create_account, issue_token
    from emeterai.db import make_engine, make_sessions, transaction
    from emeterai.quota import add_quota

    engine = make_engine(server.env["EMETERAI_DATABASE_URL"])
    now = datetime.now(UTC)
    tokens = []
    try:
        with transaction(make_sessions(engine)) as session:
            for name in names:
                account = create_account(session, f"{name}@example.id", now=now)
                tokens.append(issue_token(session, account, now=now).token)
                add_quota(session, account.id, 2, reference=f"grant-{name}", now=now)
    finally:
        engine.dispose()
    return tokens


def stamp(client: httpx.Client, token: str, ticket: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if ticket:
        headers["X-Queue-Ticket"] = ticket
    return client.post(
        "/api/v1/stamps",
        headers=headers,
        files={"file": ("a.pdf", letter_a4(), "application/pdf")},
        data={"additional": "true"},
    )


def test_the_queue_protocol(server: Server) -> None:
    *tokens, thief = users(server, ["q0", "q1", "q2", "q3", "thief"])
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        answers = [stamp(client, token) for token in tokens]
        queued = [a for a in answers if a.status_code == 429]
        assert queued, [a.status_code for a in answers]
        assert {a.status_code for a in answers} <= {200, 429}
        last = queued[-1]
        body = last.json()
        assert body["code"] == "QUEUED" and body["lane"] == "paid" and body["position"] >= 1
        assert int(last.headers["retry-after"]) >= 1
        ticket = last.headers["x-queue-ticket"]
        assert f"emeterai_ticket={ticket}" in last.headers["set-cookie"]
        waiting = client.get("/api/v1/queue", headers={"X-Queue-Ticket": ticket}).json()
        assert waiting["ticket_state"] == "waiting" and waiting["position"] >= 1
        assert waiting["queue_length"] >= 1 and waiting["eta_s"] > 0
        # Someone else's ticket is refused: that caller gets a new place, further back.
        stolen = stamp(client, thief, ticket)
        assert stolen.status_code == 429
        assert stolen.json()["seq"] > body["seq"]
        # The holder comes back when told, and is served.
        owner = tokens[answers.index(last)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = client.get("/api/v1/queue", headers={"X-Queue-Ticket": ticket}).json()
            if state["ticket_state"] == "admitted":
                break
            time.sleep(1.0)
        served = stamp(client, owner, ticket)
        assert served.status_code == 200, served.text
        assert served.headers["content-type"] == "application/pdf"
        assert served.headers["x-queue-ticket"] != ticket  # a pass now
        # The pass admits the holder's next protected request directly.
        assert stamp(client, owner, served.headers["x-queue-ticket"]).status_code == 200
        cookie = f"emeterai_ticket={stolen.headers['x-queue-ticket']}"
        page = client.get("/antrean", headers={"Cookie": cookie})
        assert page.status_code == 200 and "antre" in page.text.lower()


def test_verification_and_operations_stay_outside(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        verified = client.post(
            "/api/v1/verify", files={"file": ("a.pdf", letter_a4(), "application/pdf")}
        )
        assert verified.status_code == 200 and verified.json()["verdict"] == "NOT_STAMPED"
        metrics = client.get("/metrics").text
        for name in (
            "emeterai_queue_length",
            "emeterai_admission_rate_per_s",
            "emeterai_capacity_estimate_per_s",
            "emeterai_stamp_latency_seconds_bucket",
            "emeterai_http_responses_total",
            "emeterai_db_write_lock_held_seconds_total",
        ):
            assert name in metrics
        status = client.get("/api/v1/status").json()
        assert {"queue_length", "eta_s", "availability_24h", "incidents"} <= status.keys()
        assert status["admission_rate_per_s"] > 0
        page = client.get("/status")
        assert page.status_code == 200 and "<html" in page.text


def test_spike_applicants_buy_stamp_and_download_through_the_queue(server: Server) -> None:
    """The benchmark's applicant script, at the smallest scale, against the real server."""
    from emeterai.bench.spike import (
        LoadPlan,
        create_applicants,
        drive_in_processes,
        quota_lost,
        summarise,
    )

    url = server.env["EMETERAI_DATABASE_URL"]
    made = create_applicants(url, 3, "spike-test")
    origin = time.time() + 0.5
    arrivals = [(index, 0.1 * index, token) for index, (_, token) in enumerate(made)]
    results = drive_in_processes(LoadPlan(server.base_url, origin, origin + 120, arrivals), 1)
    assert len(results) == 3
    for result in results:
        assert result.paid and result.stamps == 2 and result.downloads == 2, result.statuses
        assert result.finished_s is not None
    assert quota_lost(url, results, [account for account, _ in made]) == 0
    summary = summarise(results, capacity_per_s=1.0, window_start_s=0.0)
    assert summary["server_errors_5xx"] == 0 and summary["resets"] == 0
    assert summary["status_counts"]["201"] == 3 and summary["fifo_violations"] == 0


def test_a_queued_browser_is_sent_to_the_queue_page(server: Server) -> None:
    """A form post from a page gets a 303 to the queue page, never a JSON body."""
    page = {
        "Accept": "text/html,application/xhtml+xml",
        "Referer": f"{server.base_url}/register?lang=id",
    }
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        answers = [client.post("/register", data={"email": "x"}, headers=page) for _ in range(8)]
    assert 429 not in {answer.status_code for answer in answers}
    redirected = [answer for answer in answers if answer.status_code == 303]
    assert redirected, [answer.status_code for answer in answers]
    location = redirected[0].headers["location"]
    assert location == "/antrean?next=%2Fregister%3Flang%3Did"
    assert "emeterai_ticket=" in redirected[0].headers["set-cookie"]
