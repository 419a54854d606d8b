"""`emeterai bench spike`: the September 2024 surge, replayed against a real server.

1. Start `emeterai serve` (N workers) on loopback, on SQLite or PostgreSQL.
2. Measure the capacity in applicants per second, closed-loop, without overload, on a
   server with the waiting room off (nothing but the server limits it); again at the end,
   since a shared machine's speed drifts: the bar is the mean of the two.
3. Drive an open-loop schedule from separate processes: arrivals rise exponentially
   towards a deadline, from half the capacity up to `overload` times it (CASN-shaped:
   most demand comes last). Arrival times follow the schedule, never the server.
4. Each applicant buys two stamps through the shop's sandbox channel, stamps two
   documents, downloads them, and follows the queue protocol of docs/admission.md.
5. Report goodput against capacity, admitted latency, waits, FIFO violations, responses
   by status (resets and timeouts apart), unfinished applicants and `emeterai audit`.
`--no-admission` repeats the same load against the same server with the waiting room
off: the 2024 design.

Registration: there is no JSON API for it yet (the web form needs a browser session),
so the accounts are created before the run, as an operator would with
`emeterai account create`; see docs/performance.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import multiprocessing
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx

__all__ = [
    "ApplicantResult",
    "arrival_schedule",
    "fifo_violations",
    "run_spike",
    "summarise",
]

START_OFFSET_S = 1.0
SERVER_START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
TRANSPORT_RETRY_S = 2.0
FIFO_TOLERANCE_S = 0.5
STAMPS_PER_APPLICANT = 2
RAMP_FROM = 0.5  # the schedule starts at half the capacity
_TICKET = struct.Struct(">BBQQQI16s")


# --- the schedule ----------------------------------------------------------------------


def arrival_schedule(capacity_per_s: float, duration_s: float, overload: float) -> list[float]:
    """Arrival times for a rate rising as c·r0·(X/r0)^(t/D), t in [0, D]: the cumulative
    count is inverted exactly, so the k-th applicant arrives when k arrivals are due."""
    if capacity_per_s <= 0 or duration_s <= 0 or overload <= RAMP_FROM:
        raise ValueError("capacity and duration must be positive, overload above 0.5")
    growth = math.log(overload / RAMP_FROM)
    scale = capacity_per_s * RAMP_FROM * duration_s / growth
    total = int(scale * (math.exp(growth) - 1))
    return [duration_s * math.log(1 + k / scale) / growth for k in range(total)]


def saturation_time_s(duration_s: float, overload: float) -> float:
    """When the scheduled rate first reaches the capacity."""
    return duration_s * math.log(1 / RAMP_FROM) / math.log(overload / RAMP_FROM)


# --- one applicant -----------------------------------------------------------------------


@dataclass
class ApplicantResult:
    index: int
    arrival_s: float  # scheduled, relative to the start
    finished_s: float | None = None
    waited_s: float = 0.0
    paid: bool = False
    stamps: int = 0
    downloads: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    # (kind, status, latency_s, sent_at_s) of every answered request
    requests: list[tuple[str, int, float, float]] = field(default_factory=list)
    # (lane, seq, at_s, event): "wait" when told to queue, "admit" at the first use of a pass
    tickets: list[tuple[int, int, float, str]] = field(default_factory=list)


def ticket_fields(text: str) -> tuple[int, int, int] | None:
    """(lane, seq, admitted_ms) from a ticket's payload; clients may read it, not sign it."""
    try:
        payload = text.split(".")[1]
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        _, lane, seq, _, admitted_ms, _, _ = _TICKET.unpack(raw)
    except (IndexError, ValueError, struct.error):
        return None
    return lane, seq, admitted_ms


@dataclass(frozen=True)
class Answer:
    """A response, read in full (aiohttp's closes with its context)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Upload:
    """A multipart body, encoded once: every applicant sends the same document."""

    body: bytes
    content_type: str

    @classmethod
    def of(cls, document: bytes, fields: dict[str, str]) -> Upload:
        boundary = "emeterai-bench-" + secrets.token_hex(8)
        parts: list[bytes] = []
        for name, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="document.pdf"\r\nContent-Type: application/pdf\r\n\r\n'.encode()
            + document
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        return cls(b"".join(parts), f"multipart/form-data; boundary={boundary}")


class Applicant:
    def __init__(
        self,
        client: aiohttp.ClientSession,
        result: ApplicantResult,
        *,
        token: str,
        upload: Upload,
        origin: float,
        give_up_at: float,
    ) -> None:
        self.client = client
        self.result = result
        self.origin = origin
        self.give_up_at = give_up_at
        self.upload = upload
        self.ticket: str | None = None
        self.admitted_seqs: set[tuple[int, int]] = set()
        address = (
            f"10.{(result.index >> 16) & 255}.{(result.index >> 8) & 255}.{result.index & 255}"
        )
        self.headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": address}

    def _now(self) -> float:
        return time.time() - self.origin

    def _count(self, key: str) -> None:
        self.result.statuses[key] = self.result.statuses.get(key, 0) + 1

    async def _send(
        self, method: str, path: str, headers: dict[str, str], body: object, is_json: bool
    ) -> Answer:
        options: dict[str, Any] = {"json": body} if is_json else {"data": body}
        async with self.client.request(method, path, headers=headers, **options) as response:
            content = await response.read()
            return Answer(response.status, response.headers.copy(), content)

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        upload: Upload | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Answer | None:
        """One logical request, repeated as the queue protocol says, until answered."""
        while time.time() < self.give_up_at:
            headers = {**self.headers, **(extra_headers or {})}
            if self.ticket:
                headers["X-Queue-Ticket"] = self.ticket
            body: object = json_body
            if upload is not None:
                headers["Content-Type"] = upload.content_type
                body = upload.body
            sent = self._now()
            try:
                response = await self._send(method, path, headers, body, json_body is not None)
            except TimeoutError:
                self._count("timeout")
                await asyncio.sleep(TRANSPORT_RETRY_S)
                continue
            except aiohttp.ClientError:
                self._count("reset")
                await asyncio.sleep(TRANSPORT_RETRY_S)
                continue
            # Time held open by the waiting room is queue wait, not admitted latency.
            held_s = float(response.headers.get("x-queue-held-ms", "0") or 0) / 1000
            latency = self._now() - sent - held_s
            self.result.waited_s += held_s
            self._count(str(response.status))
            if response.status == 429:
                self._count(f"429 {response.json().get('code', '')}".strip())
            self.result.requests.append((kind, response.status, latency, sent))
            ticket = response.headers.get("x-queue-ticket")
            if ticket:
                self.ticket = ticket
                fields = ticket_fields(ticket)
                if fields and fields[2] and response.status < 400:
                    key = (fields[0], fields[1])
                    if key not in self.admitted_seqs:
                        self.admitted_seqs.add(key)
                        # Admitted when the hold ended, not when the request was sent.
                        admitted_at = sent + held_s
                        self.result.tickets.append((fields[0], fields[1], admitted_at, "admit"))
            if response.status == 429 or response.status >= 500:
                retry = float(response.headers.get("retry-after", "1") or 1)
                if response.status == 429:
                    answer = response.json()
                    if answer.get("code") == "QUEUED" and "seq" in answer:
                        lane = ["progress", "paid", "new"].index(answer.get("lane", "new"))
                        self.result.tickets.append((lane, int(answer["seq"]), sent, "wait"))
                pause = min(max(retry, 0.5), max(0.0, self.give_up_at - time.time()))
                self.result.waited_s += pause
                await asyncio.sleep(pause)
                continue
            return response
        return None

    async def run(self) -> None:
        key = secrets.token_hex(8)
        order = await self.call(
            "order",
            "POST",
            "/api/v1/me/orders",
            json_body={"count": STAMPS_PER_APPLICANT},
            extra_headers={"Idempotency-Key": f"order-{key}"},
        )
        if order is None or order.status != 201:
            return
        order_id = order.json().get("order_id")
        paid = await self.call(
            "pay",
            "POST",
            f"/api/v1/me/orders/{order_id}/sandbox-pay",
            json_body={"outcome": "confirm"},
        )
        if paid is None or paid.status != 200:
            return
        self.result.paid = True
        serials: list[str] = []
        for number in range(STAMPS_PER_APPLICANT):
            stamped = await self.call(
                "stamp",
                "POST",
                "/api/v1/stamps",
                upload=self.upload,
                extra_headers={"Idempotency-Key": f"stamp-{key}-{number}"},
            )
            if stamped is None or stamped.status != 200:
                return
            self.result.stamps += 1
            serials.append(stamped.headers["x-emeterai-serial"])
        for serial in serials:
            got = await self.call("download", "GET", f"/api/v1/me/stamps/{serial}/document")
            if got is None or got.status != 200:
                return
            self.result.downloads += 1
        self.result.finished_s = self._now()


# --- load processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPlan:
    base_url: str
    origin: float  # unix time of t = 0
    give_up_at: float
    arrivals: list[tuple[int, float, str]]  # (index, arrival_s, token)
    closed_loop_slots: int = 0  # capacity phase: this many applicants at a time, back to back
    closed_loop_until: float = 0.0
    output: str = ""


async def _drive(plan: LoadPlan) -> list[ApplicantResult]:
    from emeterai.pdf.samples import letter_a4

    upload = Upload.of(letter_a4(), {"page": "1", "x": "400", "y": "60", "additional": "true"})
    results: list[ApplicantResult] = []
    # aiohttp, not httpx: its client costs about a tenth of the CPU per request, and the
    # load generators share the machine with the server they measure.
    connector = aiohttp.TCPConnector(limit=2000, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        base_url=plan.base_url, connector=connector, timeout=timeout
    ) as client:

        async def one(index: int, arrival_s: float, token: str) -> None:
            delay = plan.origin + arrival_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            result = ApplicantResult(index=index, arrival_s=arrival_s)
            results.append(result)
            applicant = Applicant(
                client,
                result,
                token=token,
                upload=upload,
                origin=plan.origin,
                give_up_at=plan.give_up_at,
            )
            await applicant.run()

        if plan.closed_loop_slots == 0:
            await asyncio.gather(*(one(i, at, token) for i, at, token in plan.arrivals))
            return results
        pending = list(plan.arrivals)

        async def slot() -> None:
            while pending and time.time() < plan.closed_loop_until:
                index, _, token = pending.pop(0)
                await one(index, max(0.0, time.time() - plan.origin), token)

        await asyncio.gather(*(slot() for _ in range(plan.closed_loop_slots)))
    return results


def _load_process(plan: LoadPlan) -> None:
    results = asyncio.run(_drive(plan))
    Path(plan.output).write_text(json.dumps([asdict(r) for r in results]))


def drive_in_processes(plan: LoadPlan, processes: int) -> list[ApplicantResult]:
    """Split the arrivals over `processes` load generators (spawned) and gather results."""
    directory = Path(tempfile.mkdtemp(prefix="emeterai-spike-load-"))
    context = multiprocessing.get_context("spawn")
    workers = []
    for number in range(processes):
        share = LoadPlan(
            base_url=plan.base_url,
            origin=plan.origin,
            give_up_at=plan.give_up_at,
            arrivals=plan.arrivals[number::processes],
            closed_loop_slots=plan.closed_loop_slots // processes if plan.closed_loop_slots else 0,
            closed_loop_until=plan.closed_loop_until,
            output=str(directory / f"load-{number}.json"),
        )
        worker = context.Process(target=_load_process, args=(share,))
        worker.start()
        workers.append((worker, Path(share.output)))
    results: list[ApplicantResult] = []
    try:
        for worker, output in workers:
            worker.join()
            if output.exists():
                for item in json.loads(output.read_text()):
                    item["requests"] = [tuple(r) for r in item["requests"]]
                    item["tickets"] = [tuple(t) for t in item["tickets"]]
                    results.append(ApplicantResult(**item))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return sorted(results, key=lambda r: r.index)


# --- figures -----------------------------------------------------------------------------


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def fifo_violations(results: list[ApplicantResult], tolerance_s: float = FIFO_TOLERANCE_S) -> int:
    """Times someone was told to wait although a later arrival in the same lane had
    already been admitted (more than `tolerance_s` earlier: the processes' view of the
    frontier may lag one tick)."""
    count = 0
    for lane in range(3):
        events = sorted(
            (at, seq, kind)
            for result in results
            for (ticket_lane, seq, at, kind) in result.tickets
            if ticket_lane == lane
        )
        admitted: list[tuple[float, int]] = [
            (at, seq) for at, seq, kind in events if kind == "admit"
        ]
        highest_before: list[tuple[float, int]] = []
        best = 0
        for at, seq in admitted:
            best = max(best, seq)
            highest_before.append((at, best))
        index = 0
        best = 0
        for at, seq, kind in events:
            if kind != "wait":
                continue
            while index < len(highest_before) and highest_before[index][0] < at - tolerance_s:
                best = highest_before[index][1]
                index += 1
            if best > seq:
                count += 1
    return count


def summarise(
    results: list[ApplicantResult],
    *,
    capacity_per_s: float,
    window_start_s: float,
) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for result in results:
        for key, value in result.statuses.items():
            statuses[key] = statuses.get(key, 0) + value
    finished = [r for r in results if r.finished_s is not None]
    last = max((r.finished_s for r in finished if r.finished_s is not None), default=0.0)
    in_window = [r for r in finished if r.finished_s is not None and r.finished_s >= window_start_s]
    span = max(1e-9, last - window_start_s)
    stamp_latencies = [
        latency * 1000
        for r in results
        for kind, status, latency, _ in r.requests
        if kind == "stamp" and status == 200
    ]
    waits = [r.waited_s for r in results]
    server_errors = sum(v for k, v in statuses.items() if k.isdigit() and int(k) >= 500)
    refusals = {k: statuses.pop(k) for k in list(statuses) if k.startswith("429 ")}
    return {
        "capacity_per_s": round(capacity_per_s, 3),
        "goodput_per_s": round(len(in_window) / span, 3) if in_window else 0.0,
        "goodput_ratio": round(len(in_window) / span / capacity_per_s, 3) if in_window else 0.0,
        "applicants": len(results),
        "finished_applicants": len(finished),
        "unfinished_applicants": len(results) - len(finished),
        "status_counts": dict(sorted(statuses.items())),
        "refusals_429_by_code": dict(sorted(refusals.items())),
        "server_errors_5xx": server_errors,
        "resets": statuses.get("reset", 0),
        "timeouts": statuses.get("timeout", 0),
        "admitted_p50_ms": round(_percentile(stamp_latencies, 0.5), 1),
        "admitted_p99_ms": round(_percentile(stamp_latencies, 0.99), 1),
        "wait_p50_s": round(_percentile(waits, 0.5), 2),
        "wait_p90_s": round(_percentile(waits, 0.9), 2),
        "wait_p99_s": round(_percentile(waits, 0.99), 2),
        "wait_max_s": round(max(waits, default=0.0), 2),
        "fifo_violations": fifo_violations(results),
        "drain_end_s": round(last, 1),
    }


SURGE_TAIL_S = 15.0  # after the last arrival, the surge's crowd is still arriving in work


def phases(
    results: list[ApplicantResult], *, duration_s: float, overload: float, capacity_per_s: float
) -> dict[str, dict[str, float]]:
    """Where goodput goes: applicants finished per second, and as a share of the capacity,
    in the ramp (from when arrivals pass the capacity, for a third of the arrivals'
    duration), the surge (until SURGE_TAIL_S after the last arrival) and the drain (until
    the last applicant finished). A phase the run never reached is left out."""
    ends = sorted(r.finished_s for r in results if r.finished_s is not None)
    last = ends[-1] if ends else 0.0
    start = saturation_time_s(duration_s, overload)
    # A short run may be over before a phase's end: each ends by the last finish.
    ramp_end = max(start, min(start + duration_s / 3, last))
    surge_end = max(ramp_end, min(duration_s + SURGE_TAIL_S, last))
    bounds = {"ramp": (start, ramp_end), "surge": (ramp_end, surge_end), "drain": (surge_end, last)}
    found: dict[str, dict[str, float]] = {}
    for name, (begin, end) in bounds.items():
        if end <= begin:
            continue
        count = sum(1 for at in ends if begin <= at < end or at == last == end)
        rate = count / (end - begin)
        found[name] = {
            "from_s": round(begin, 1),
            "to_s": round(end, 1),
            "finished_per_s": round(rate, 3),
            "ratio": round(rate / capacity_per_s, 3) if capacity_per_s > 0 else 0.0,
        }
    return found


def timeline(
    results: list[ApplicantResult], samples: list[dict[str, float]]
) -> dict[str, list[float]]:
    """Per-second series for the plot."""
    last = [r.arrival_s for r in results] + [r.finished_s or 0.0 for r in results]
    end = int(max([*last, *(s["t"] for s in samples), 1.0])) + 2
    arrivals = [0.0] * end
    admissions = [0.0] * end
    finished = [0.0] * end
    latency: list[list[float]] = [[] for _ in range(end)]
    for result in results:
        second = int(result.arrival_s)
        if 0 <= second < end:
            arrivals[second] += 1
        if result.finished_s is not None and 0 <= int(result.finished_s) < end:
            finished[int(result.finished_s)] += 1
        for _, _, at, kind in result.tickets:
            if kind == "admit" and 0 <= int(at) < end:
                admissions[int(at)] += 1
        for kind, status, seconds, sent in result.requests:
            if kind == "stamp" and status == 200 and 0 <= int(sent) < end:
                latency[int(sent)].append(seconds)
    return {
        "t": [float(i) for i in range(end)],
        "arrivals": arrivals,
        "admissions": admissions,
        "finished": finished,
        "stamp_p99_s": [_percentile(values, 0.99) for values in latency],
        "queue_t": [s["t"] for s in samples],
        "queue_length": [s["queue_length"] for s in samples],
        # The controllers' view, per monitor sample (absent without the waiting room).
        **{
            f"controller_{key}": [round(s.get(key, 0.0), 3) for s in samples]
            for key in ("rate", "capacity_estimate", "completed", "demand", "inflight", "slots")
        },
    }


# --- the run -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class BenchServer:
    process: subprocess.Popen[bytes]
    base_url: str
    env: dict[str, str]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(env: dict[str, str], workers: int, *, admission: bool, log: Path) -> BenchServer:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "emeterai",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if not admission:
        command.append("--no-admission")
    with log.open("ab") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the benchmark server exited at start; see {log}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return BenchServer(process, base_url, env)
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("the benchmark server did not become ready")


def create_applicants(database_url: str, count: int, label: str) -> list[tuple[int, str]]:
    """Accounts and API tokens, made as `emeterai account create` would, in bulk.

    One Argon2 hash serves every token of the run (each token has its own id), since
    hashing thousands of secrets would take minutes; the server verifies each in full."""
    from emeterai.accounts import create_account
    from emeterai.accounts.models import ApiToken
    from emeterai.db import make_engine, make_sessions, transaction
    from emeterai.hashing import GENERATED_SECRET_HASHER

    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    secret = secrets.token_urlsafe(32)
    secret_hash = GENERATED_SECRET_HASHER.hash(secret)  # as issue_token hashes one
    now = datetime.now(UTC)
    made: list[tuple[int, str]] = []
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    try:
        with transaction(sessions) as session:
            for number in range(count):
                account = create_account(session, f"{label}-{number}@bench.example.id", now=now)
                token_id = "".join(secrets.choice(alphabet) for _ in range(16))
                session.add(
                    ApiToken(
                        id=token_id, account_id=account.id, secret_hash=secret_hash, created_at=now
                    )
                )
                made.append((account.id, f"emt_{token_id}_{secret}"))
    finally:
        engine.dispose()
    return made


def quota_lost(database_url: str, results: list[ApplicantResult], accounts: list[int]) -> int:
    """Applicants whose ledger disagrees with what they got: paid but not credited, or
    charged for a stamp they did not receive."""
    from emeterai.db import make_engine, make_sessions, transaction
    from emeterai.quota import quota_balance

    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    lost = 0
    try:
        with transaction(sessions) as session:
            now = datetime.now(UTC)
            for result in results:
                balance = quota_balance(session, accounts[result.index], now=now)
                if result.paid and balance.credited < STAMPS_PER_APPLICANT:
                    lost += 1  # paid, but no quota
                elif balance.used > result.stamps and result.finished_s is not None:
                    lost += 1  # charged for a stamp the applicant never received
    finally:
        engine.dispose()
    return lost


def run_audit(env: dict[str, str]) -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "emeterai", "audit", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode == 0


# What the monitor reads from /metrics each second: the controllers' view (sum over the
# processes, but the demand, a mean of the processes').
CONTROLLER_GAUGES = {
    "emeterai_admission_rate_per_s": "rate",
    "emeterai_capacity_estimate_per_s": "capacity_estimate",
    "emeterai_protected_completed_per_s": "completed",
    "emeterai_admission_demand": "demand",
    "emeterai_protected_slots": "slots",
    # A counter (seconds held, summed over the processes): see lock_busy_share.
    "emeterai_db_write_lock_held_seconds_total": "lock_held_s",
}


def controller_view(exposition: str) -> dict[str, float]:
    """The controllers' gauges from a /metrics text: sums, and the demand's mean."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in CONTROLLER_GAUGES:
                values.setdefault(CONTROLLER_GAUGES[sample.name], []).append(sample.value)
            elif sample.name == "emeterai_inflight" and sample.labels.get("kind") == "protected":
                values.setdefault("inflight", []).append(sample.value)
    view = {key: sum(found) for key, found in values.items()}
    if values.get("demand"):
        view["demand"] = sum(values["demand"]) / len(values["demand"])
    return view


def lock_busy_share(samples: list[dict[str, float]], start_s: float, end_s: float) -> float | None:
    """The share of [start_s, end_s] (the run's seconds) that SQLite's write lock was held,
    from the monitor's samples of the servers' counter; None without two samples in it.
    On SQLite this lock is what bounds the server (docs/performance.md); PostgreSQL
    shows 0."""
    inside = [s for s in samples if start_s <= s["t"] <= end_s and "lock_held_s" in s]
    if len(inside) < 2 or inside[-1]["t"] - inside[0]["t"] < 1.0:
        return None
    first, last = inside[0], inside[-1]
    return round((last["lock_held_s"] - first["lock_held_s"]) / (last["t"] - first["t"]), 3)


@contextmanager
def monitoring(base_url: str, origin: float) -> Iterator[list[dict[str, float]]]:
    """Sample the queue and the servers' gauges each second, in a thread, while inside."""
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    thread = threading.Thread(target=_monitor, args=(base_url, origin, stop, samples), daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)


def _monitor(
    base_url: str, origin: float, stop: threading.Event, samples: list[dict[str, float]]
) -> None:
    headers = {"X-Forwarded-For": "192.0.2.1"}
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while not stop.is_set():
            try:
                view = client.get("/api/v1/queue", headers=headers).json()
                sample = {
                    "t": time.time() - origin,
                    "queue_length": float(view.get("queue_length", 0)),
                    "rate": float(view.get("admission_rate_per_s", 0)),
                }
                sample.update(controller_view(client.get("/metrics").text))
                samples.append(sample)
            except (httpx.HTTPError, ValueError):
                pass
            stop.wait(1.0)


def measure_capacity(
    server: BenchServer,
    tokens: list[tuple[int, str]],
    *,
    seconds: float,
    concurrency: int,
    processes: int,
) -> tuple[float, list[ApplicantResult], float | None]:
    """Closed loop, no overload: `concurrency` applicants at a time, each followed by the
    next as soon as it finishes. Completions per second after a warm-up of a third, and
    the write lock's busy share over the same window."""
    origin = time.time() + START_OFFSET_S
    plan = LoadPlan(
        server.base_url,
        origin,
        origin + seconds * 3,
        [(index, 0.0, token) for index, (_, token) in enumerate(tokens)],
        closed_loop_slots=concurrency,
        closed_loop_until=origin + seconds,
    )
    with monitoring(server.base_url, origin) as samples:
        results = drive_in_processes(plan, processes)
    warm = seconds / 3
    done = [r for r in results if r.finished_s is not None and warm <= r.finished_s <= seconds]
    return len(done) / (seconds - warm), results, lock_busy_share(samples, warm, seconds)


def run_spike(
    *,
    duration_s: float,
    overload: float,
    workers: int,
    database_url: str | None,
    compare_no_admission: bool,
    load_processes: int = 2,
    capacity_s: float = 20.0,
    capacity_concurrency: int = 0,
    drain_factor: float = 8.0,
    capacity_per_s: float | None = None,
    admission_settings: Mapping[str, str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    from emeterai.config import Settings
    from emeterai.migrate import upgrade_database
    from emeterai.pki import create_issuer_pki

    data_dir = Path(tempfile.mkdtemp(prefix="emeterai-spike-"))
    passphrase = secrets.token_urlsafe(24)
    url = database_url or f"sqlite:///{data_dir / 'spike.db'}"
    settings = Settings(data_dir=data_dir, database_url=url, key_passphrase=passphrase)  # type: ignore[arg-type]
    create_issuer_pki(settings.pki_dir, passphrase.encode())
    upgrade_database(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMETERAI_")}
    env.update(
        EMETERAI_DATA_DIR=str(data_dir),
        EMETERAI_DATABASE_URL=url,
        EMETERAI_KEY_PASSPHRASE=passphrase,
        EMETERAI_PAYMENTS_SANDBOX="true",
    )
    log = data_dir / "server.log"
    tuning = dict(admission_settings or {})
    report: dict[str, Any] = {
        "benchmark": "spike",
        "measured_at": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "database": "postgresql"
        if database_url and not database_url.startswith("sqlite")
        else "sqlite",
        "workers": workers,
        "duration_s": duration_s,
        "overload": overload,
        "admission_settings": tuning,
    }
    runs: dict[str, Any] = {}
    series: dict[str, Any] = {}
    modes = [True, False] if compare_no_admission else [True]

    lock_shares: dict[str, float | None] = {}

    def server_capacity(when: str) -> float:
        # The server's own capacity: measured with the waiting room off, so that nothing
        # but the server limits it (the bar the waiting room is held to).
        concurrency = capacity_concurrency or 6 * workers
        progress(f"measuring capacity ({when}) for {capacity_s:.0f} s, {concurrency} at a time")
        server = start_server(env, workers, admission=False, log=log)
        try:
            tokens = create_applicants(url, max(concurrency * 40, 50), f"capacity-{when}")
            measured, _, lock_shares[when] = measure_capacity(
                server,
                tokens,
                seconds=capacity_s,
                concurrency=concurrency,
                processes=load_processes,
            )
        finally:
            server.stop()
        if measured <= 0:
            raise RuntimeError(
                f"the server finished no applicant while its capacity was measured ({when});"
                f" see its log, {log}"
            )
        progress(f"capacity ({when}): {measured:.2f} applicants/s")
        return measured

    before = capacity_per_s if capacity_per_s is not None else server_capacity("before")
    finished: list[tuple[str, list[ApplicantResult], list[tuple[int, str]], Any]] = []
    for admission in modes:
        name = "admission" if admission else "no_admission"
        progress(f"{name}: starting {workers} worker(s)")
        # An operator's tuning under test (the capacity phases run without the room).
        tuned = {f"EMETERAI_ADMISSION_{k.upper()}": v for k, v in tuning.items()}
        server = start_server({**env, **tuned}, workers, admission=admission, log=log)
        try:
            schedule = arrival_schedule(before, duration_s, overload)
            progress(f"{name}: {len(schedule)} applicants over {duration_s:.0f} s")
            made = create_applicants(url, len(schedule), f"{name}-{secrets.token_hex(3)}")
            origin = time.time() + START_OFFSET_S + 1.0
            give_up_at = origin + duration_s * (1 + drain_factor)
            plan = LoadPlan(
                server.base_url,
                origin,
                give_up_at,
                [(i, at, made[i][1]) for i, at in enumerate(schedule)],
            )
            with monitoring(server.base_url, origin) as samples:
                results = drive_in_processes(plan, load_processes)
        finally:
            server.stop()
        finished.append((name, results, made, samples))
    # Measured again at the end: this machine's speed drifts over minutes (shared cores),
    # so the bar is the mean of the two, and both are reported.
    after = capacity_per_s if capacity_per_s is not None else server_capacity("after")
    capacity = (before + after) / 2
    report.update(
        capacity_before_per_s=round(before, 3),
        capacity_after_per_s=round(after, 3),
        capacity_drift=capacity_drift(before, after),
    )
    # The closed loop's busy share of SQLite's write lock: what the phases' shares compare to.
    report["capacity_db_lock_busy"] = [lock_shares.get("before"), lock_shares.get("after")]
    for name, results, made, samples in finished:
        summary = summarise(
            results, capacity_per_s=capacity, window_start_s=saturation_time_s(duration_s, overload)
        )
        summary["quota_lost"] = quota_lost(url, results, [account for account, _ in made])
        summary["phases"] = phases(
            results, duration_s=duration_s, overload=overload, capacity_per_s=capacity
        )
        for phase in summary["phases"].values():
            phase["db_lock_busy"] = lock_busy_share(samples, phase["from_s"], phase["to_s"])
        runs[name] = summary
        series[name] = timeline(results, samples)
    progress("running emeterai audit")
    audit_ok = run_audit(env)
    main = runs["admission"]
    report.update(main)
    report["audit_ok"] = audit_ok
    report["latency_target_ms"] = 2000.0
    if "no_admission" in runs:
        report["no_admission"] = {**runs["no_admission"], "audit_ok": audit_ok}
    report["series"] = series
    report["data_dir"] = str(data_dir)
    return report


# Between the two capacity measurements, a larger change than this means the machine's
# speed changed under the run: its ratio then says more about the machine than the server.
CAPACITY_DRIFT_MAX = 0.15


def capacity_drift(before: float, after: float) -> float:
    """How far the two capacity measurements are apart, as a share of their mean."""
    mean = (before + after) / 2
    return round(abs(after - before) / mean, 3) if mean > 0 else 0.0


def acceptance(report: dict[str, Any]) -> dict[str, bool]:
    """The issue's acceptance criteria, checked on the admission run."""
    return {
        "goodput_at_least_90_percent": report["goodput_per_s"] >= 0.9 * report["capacity_per_s"],
        "no_5xx_resets_or_timeouts": report["server_errors_5xx"] == 0
        and report["resets"] == 0
        and report["timeouts"] == 0,
        "no_lost_quota": report.get("quota_lost", 0) == 0,
        "audit_ok": bool(report["audit_ok"]),
        "every_applicant_finished": report["unfinished_applicants"] == 0,
        "fifo_within_lanes": report["fifo_violations"] == 0,
        "stamp_p99_within_target": report["admitted_p99_ms"] <= report["latency_target_ms"],
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [name for name in ("admission", "no_admission") if name in report["series"]]
    figure, axes = plt.subplots(
        4, len(runs), figsize=(6 * len(runs), 11), squeeze=False, sharex="col"
    )
    for column, name in enumerate(runs):
        data = report["series"][name]
        title = "with admission" if name == "admission" else "without admission (2024)"
        axes[0][column].set_title(title)
        axes[0][column].plot(data["t"], data["arrivals"], label="arrivals/s", color="tab:red")
        axes[0][column].axhline(report["capacity_per_s"], ls="--", color="grey", label="capacity")
        axes[0][column].set_ylabel("applicants/s")
        axes[0][column].legend(loc="upper left")
        # Without the room nobody is admitted: what it finishes is then the figure to see.
        if name == "admission":
            axes[1][column].plot(
                data["t"], data["admissions"], label="admitted/s", color="tab:green"
            )
        axes[1][column].plot(data["t"], data["finished"], label="finished/s", color="tab:olive")
        axes[1][column].axhline(report["capacity_per_s"], ls="--", color="grey")
        axes[1][column].set_ylabel("applicants/s")
        axes[1][column].legend(loc="lower right")
        axes[2][column].plot(data["queue_t"], data["queue_length"], color="tab:blue")
        axes[2][column].set_ylabel("queue length")
        axes[3][column].plot(data["t"], data["stamp_p99_s"], color="tab:purple")
        axes[3][column].axhline(report["latency_target_ms"] / 1000, ls="--", color="grey")
        axes[3][column].set_ylabel("stamp p99 (s)")
        axes[3][column].set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
