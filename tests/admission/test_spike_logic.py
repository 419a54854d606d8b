"""The spike benchmark's logic at a small scale: correctness only, never wall-clock."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest

from emeterai.bench.spike import (
    ApplicantResult,
    acceptance,
    arrival_schedule,
    capacity_drift,
    controller_view,
    fifo_violations,
    lock_busy_share,
    phases,
    plot,
    saturation_time_s,
    summarise,
    ticket_fields,
    timeline,
)


def test_schedule_rises_towards_the_deadline_up_to_the_overload() -> None:
    times = arrival_schedule(capacity_per_s=4.0, duration_s=30.0, overload=20.0)
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 30.0
    first = sum(1 for t in times if t < 1.0)
    last = sum(1 for t in times if t >= 29.0)
    assert first == pytest.approx(2, abs=1)  # half the capacity at the start
    assert last == pytest.approx(75, rel=0.05)  # rising to 20x at the deadline
    assert saturation_time_s(30.0, 20.0) == pytest.approx(30 * 0.6931 / 3.6889, rel=1e-3)
    with pytest.raises(ValueError):
        arrival_schedule(0, 30, 20)


def result(index: int, tickets: list[tuple[int, int, float, str]]) -> ApplicantResult:
    return ApplicantResult(index=index, arrival_s=0.0, tickets=tickets)


def test_fifo_violation_is_a_wait_after_a_later_arrival_was_admitted() -> None:
    fair = [
        result(0, [(2, 1, 1.0, "wait"), (2, 1, 5.0, "admit")]),
        result(1, [(2, 2, 1.1, "wait"), (2, 2, 6.0, "admit")]),
    ]
    assert fifo_violations(fair) == 0
    unfair = [
        result(0, [(2, 1, 1.0, "wait"), (2, 1, 7.0, "wait"), (2, 1, 9.0, "admit")]),
        result(1, [(2, 2, 1.1, "wait"), (2, 2, 6.0, "admit")]),
    ]
    assert fifo_violations(unfair) == 1
    # Another lane is another line, and a lag under the tolerance is not counted.
    assert fifo_violations([*fair, result(2, [(1, 9, 0.5, "admit")])]) == 0
    lagging = [result(0, [(2, 1, 6.2, "wait")]), result(1, [(2, 2, 6.0, "admit")])]
    assert fifo_violations(lagging) == 0


def test_ticket_fields_are_read_from_the_payload() -> None:
    payload = struct.pack(">BBQQQI16s", 1, 2, 77, 1000, 2000, 5, b"b" * 16)
    text = "q1." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + ".mac"
    assert ticket_fields(text) == (2, 77, 2000)
    assert ticket_fields("garbage") is None


def finished(index: int, arrival: float, done: float, latency: float) -> ApplicantResult:
    return ApplicantResult(
        index=index,
        arrival_s=arrival,
        finished_s=done,
        waited_s=done - arrival - 1,
        paid=True,
        stamps=2,
        downloads=2,
        statuses={"200": 5, "201": 1, "429": 2},
        requests=[("stamp", 200, latency, arrival + 1), ("stamp", 200, latency, arrival + 2)],
        tickets=[(1, index + 1, arrival, "wait"), (1, index + 1, arrival + 1, "admit")],
    )


def test_summary_figures_and_acceptance(tmp_path: Path) -> None:
    results = [finished(i, i * 0.1, 10 + i, 0.2 + i / 100) for i in range(10)]
    results.append(ApplicantResult(index=10, arrival_s=1.0, statuses={"reset": 1}))
    summary = summarise(results, capacity_per_s=1.0, window_start_s=10.0)
    assert summary["finished_applicants"] == 10 and summary["unfinished_applicants"] == 1
    assert summary["goodput_per_s"] == pytest.approx(10 / 9, rel=1e-3)
    assert summary["status_counts"] == {"200": 50, "201": 10, "429": 20, "reset": 1}
    assert summary["resets"] == 1 and summary["server_errors_5xx"] == 0
    assert summary["admitted_p50_ms"] == pytest.approx(240, abs=11)
    assert summary["fifo_violations"] == 0
    report = {**summary, "audit_ok": True, "quota_lost": 0, "latency_target_ms": 2000.0}
    checks = acceptance(report)
    assert checks["goodput_at_least_90_percent"] and checks["stamp_p99_within_target"]
    assert not checks["every_applicant_finished"] and not checks["no_5xx_resets_or_timeouts"]
    series = timeline(results, [{"t": 1.0, "queue_length": 3.0, "rate": 1.0}])
    assert sum(series["arrivals"]) == 11 and sum(series["admissions"]) == 10
    report["series"] = {"admission": series, "no_admission": series}
    report["capacity_per_s"] = 1.0
    picture = tmp_path / "spike.png"
    plot(report, picture)
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_phases_split_the_finishes_into_ramp_surge_and_drain() -> None:
    # 30 s of arrivals at 20x: arrivals pass the capacity at 5.6 s; ramp to 15.6 s, surge
    # to 45 s, drain to the last finish. One finish a second from 0 s to 100 s, and a
    # second one each second of the drain.
    ends = [float(t) for t in range(101)] + [t + 0.5 for t in range(45, 100)]
    results = [finished(i, 0.0, at, 0.1) for i, at in enumerate(ends)]
    split = phases(results, duration_s=30, overload=20, capacity_per_s=2.0)
    assert split["ramp"]["from_s"] == pytest.approx(5.6)
    assert split["ramp"]["to_s"] == pytest.approx(15.6)
    assert split["surge"]["to_s"] == 45.0 and split["drain"]["to_s"] == 100.0
    assert split["ramp"]["finished_per_s"] == pytest.approx(1.0)
    assert split["surge"]["ratio"] == pytest.approx(0.5, abs=0.02)
    assert split["drain"]["finished_per_s"] == pytest.approx(2.0, abs=0.02)
    assert phases([], duration_s=30, overload=20, capacity_per_s=2.0) == {}
    # A short run, over within the surge: no drain, and the surge ends at the last finish.
    short = phases(results[:30], duration_s=30, overload=20, capacity_per_s=2.0)
    assert short.keys() == {"ramp", "surge"} and short["surge"]["to_s"] == 29.0


def test_lock_busy_share_is_the_held_counters_growth_over_the_window() -> None:
    exposition = (
        "# TYPE emeterai_db_write_lock_held_seconds_total counter\n"
        "emeterai_db_write_lock_held_seconds_total 12.5\n"
        "# TYPE emeterai_admission_rate_per_s gauge\n"
        "emeterai_admission_rate_per_s 9.0\n"
    )
    assert controller_view(exposition) == {"lock_held_s": 12.5, "rate": 9.0}
    # Held 0.75 s of every second from 10 s to 20 s, then 0.25 s of every second.
    samples = [
        {"t": float(t), "lock_held_s": 0.75 * min(t, 20) + 0.25 * max(0, t - 20)}
        for t in range(10, 41)
    ]
    assert lock_busy_share(samples, 10, 20) == pytest.approx(0.75)
    assert lock_busy_share(samples, 20, 40) == pytest.approx(0.25)
    assert lock_busy_share(samples, 10, 40) == pytest.approx(0.417, abs=0.001)
    # Too few samples in the window, or none from a server without the counter.
    assert lock_busy_share(samples, 50, 60) is None
    assert lock_busy_share([{"t": float(t)} for t in range(10)], 0, 10) is None


def test_capacity_drift_is_the_gap_between_the_two_measurements_over_their_mean() -> None:
    assert capacity_drift(20.0, 20.0) == 0.0
    assert capacity_drift(18.0, 22.0) == pytest.approx(0.2)
    assert capacity_drift(22.0, 18.0) == pytest.approx(0.2)
    assert capacity_drift(4.95, 18.9) == pytest.approx(1.169, abs=0.001)
    assert capacity_drift(0.0, 0.0) == 0.0
