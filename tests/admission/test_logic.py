"""The controller, the limiters, the slots and the fair distribution: pure logic."""

from __future__ import annotations

import asyncio

import pytest

from emeterai.admission.controller import (
    CEILING,
    DEMAND_TARGET,
    FLOOR,
    GAIN,
    GROW_BELOW,
    GROW_COOLDOWN_S,
    SETPOINT,
    SHRINK_COOLDOWN_S,
    STEP_MAX,
    STEP_MAX_IDLE,
    STEP_MIN,
    CapacityController,
    SlotSizer,
    percentile,
)
from emeterai.admission.limits import KeyedRateLimiter
from emeterai.admission.room import retry_after_for
from emeterai.admission.slots import Slots
from emeterai.admission.status import MINUTE_MS, Minute, incidents_from
from emeterai.admission.store import distribute


def controller(**overrides: float) -> CapacityController:
    values = {
        "target_s": 2.0,
        "rate_initial_per_s": 10.0,
        "rate_min_per_s": 1.0,
        "rate_max_per_s": 100.0,
    }
    values.update(overrides)
    return CapacityController(**values)  # type: ignore[arg-type]


def test_slow_stamps_decrease_the_rate_then_wait_for_fresh_latencies() -> None:
    c = controller()
    for i in range(20):
        c.observe(1.8, stamp=True, now=100 + i * 0.01)  # over 75% of the 2 s target
    assert c.update(101, waiting=50, utilisation=1.0).decision == "decrease"
    assert c.rate_per_s == pytest.approx(8.5)
    for i in range(20):
        c.observe(1.8, stamp=True, now=101.5 + i * 0.01)
    assert c.update(102, waiting=50, utilisation=1.0).decision == "hold"  # cooldown
    assert c.update(103.5, waiting=50, utilisation=1.0).decision == "decrease"


def test_work_piling_up_decreases_the_rate_in_proportion() -> None:
    c = controller()
    # Every slot taken and three times as many waiting: demand 4, twice the target.
    state = c.update(101, waiting=5, utilisation=1.0, backlog=3.0)
    assert state.decision == "decrease" and state.demand == 4.0
    assert c.rate_per_s == pytest.approx(10 * max(STEP_MIN, (DEMAND_TARGET / 4) ** GAIN))
    # A little over the target: a small step down.
    mild = controller()
    mild.update(101, waiting=5, utilisation=1.0, backlog=1.3)
    assert mild.rate_per_s == pytest.approx(10 * (DEMAND_TARGET / 2.3) ** GAIN)


def test_idle_slots_increase_the_rate_while_the_admitted_come() -> None:
    c = controller()
    for i in range(20):
        c.observe(0.3, stamp=True, now=100 + i * 0.01)
    for i in range(60):
        c.observe_shown(96.5 + i * 0.075)  # 12 a second came in: more than 60% of 10
    assert c.update(101, waiting=10, utilisation=0.5).decision == "increase"
    assert c.rate_per_s == pytest.approx(10 * min(STEP_MAX, (DEMAND_TARGET / 0.5) ** GAIN))
    assert c.update(102, waiting=0, utilisation=0.1).decision == "hold"  # nobody waits
    # The demand is smoothed: one busy second after an idle one does not reverse it.
    assert c.update(102.5, waiting=10, utilisation=1.0).decision == "increase"


def test_mostly_idle_slots_ramp_the_rate_up_fast_as_long_as_people_come() -> None:
    c = controller(rate_initial_per_s=4.0)
    c.capacity_per_s = 4.0  # measured in a brief rush at start-up: the ceiling moves too
    rates = []
    for second in range(6):
        now = 100.0 + second
        for i in range(int(c.rate_per_s)):  # everyone let in comes
            c.observe_shown(now + i / c.rate_per_s)
        c.update(now + 1, waiting=500, utilisation=0.2)
        rates.append(c.rate_per_s)
    assert rates[0] == pytest.approx(4.0 * STEP_MAX_IDLE)
    assert rates[-1] > 4.0 * 1.1**6 * 1.5  # well past the 10%-a-second step
    assert c.rate_per_s <= CEILING * c.capacity_per_s + 1e-9
    # Slots busy again (smoothed, demand 0.68): no longer idle, the ordinary small steps.
    before = c.rate_per_s
    for i in range(int(before)):
        c.observe_shown(106 + i / before)
    assert c.update(107, waiting=500, utilisation=1.0).demand > 0.5
    assert c.rate_per_s <= before * STEP_MAX + 1e-9


def test_the_rate_stays_near_the_capacity_measured_while_saturated() -> None:
    c = controller()
    for second in range(60):  # saturated: 4 requests per person, 8 requests a second
        now = 100.0 + second
        for i in range(8):
            c.observe(0.3, stamp=True, now=now + i / 8)
        for i in range(2):
            c.observe_shown(now + i / 2)
        c.update(now + 1, waiting=100, utilisation=1.0, backlog=3.0)
    assert c.capacity_per_s == pytest.approx(2.0, rel=0.05)
    # Draining the backlog never takes the rate below FLOOR x capacity.
    assert c.rate_per_s == pytest.approx(FLOOR * c.capacity_per_s, rel=0.01)
    # Nor does a lull take it above CEILING x capacity (which then grows a little).
    for second in range(60, 90):
        now = 100.0 + second
        for i in range(3):
            c.observe_shown(now + i / 3)
        c.update(now + 1, waiting=100, utilisation=0.1)
    assert c.rate_per_s <= CEILING * c.capacity_per_s + 1e-9
    assert c.capacity_per_s > 2.0


def test_an_estimate_below_what_is_served_without_saturation_is_raised() -> None:
    c = controller()
    c.capacity_per_s = 3.0  # measured in a rush at start-up
    for second in range(10):  # then 12 people a second come, and the slots are half idle
        now = 100.0 + second
        for i in range(12):
            c.observe_shown(now + i / 12)
        c.update(now + 1, waiting=100, utilisation=0.5)
    assert c.capacity_per_s >= 12.0  # at least what it served (the ceiling then grows it)
    assert c.rate_per_s > CEILING * 3.0


def test_after_a_latency_cut_the_rate_returns_to_the_floor_at_once() -> None:
    c = controller()
    c.capacity_per_s = 8.0
    for now in (101.0, 103.5, 106.0, 108.5):  # slow stamps: four cuts, to 10 x 0.85^4
        for i in range(20):
            c.observe(1.8, stamp=True, now=now - 1 + i * 0.01)
        assert c.update(now, waiting=50, utilisation=1.0).decision == "decrease"
    assert c.rate_per_s < FLOOR * 8.0
    # Later the latencies have left the window, the slots idle, the admitted come.
    for i in range(30):  # 7.5 a second: under the estimate
        c.observe_shown(116 + i * 0.13)
    assert c.update(120, waiting=50, utilisation=0.3).decision == "increase"
    assert c.rate_per_s == pytest.approx(FLOOR * 8.0)


def test_no_increase_while_the_admitted_stay_away() -> None:
    c = controller()
    for i in range(20):
        c.observe(0.3, stamp=True, now=100 + i * 0.01)
    c.observe_shown(100.5)  # the frontier moves at 10 a second, one came
    assert c.update(101, waiting=10, utilisation=0.1).decision == "hold"
    assert c.rate_per_s == 10.0


def test_slots_measure_the_work_in_flight_over_time() -> None:
    now = [0.0]

    async def scenario() -> tuple[tuple[float, float], tuple[float, float]]:
        slots = Slots(2, waiters_max=4, clock=lambda: now[0])
        assert await slots.acquire(0)
        now[0] = 1.0  # one of two slots taken for a second
        first = slots.load()
        assert await slots.acquire(0)
        waiter = asyncio.create_task(slots.acquire(5))
        await asyncio.sleep(0)
        now[0] = 2.0  # both taken and one waiting, for a second
        second = slots.load()
        slots.release()
        await waiter
        return first, second

    first, second = asyncio.run(scenario())
    assert first == pytest.approx((0.5, 0.0))
    assert second == pytest.approx((1.0, 0.5))


def test_rate_stays_within_bounds_and_pinned_rate_holds() -> None:
    c = controller(rate_max_per_s=10.5)
    for i in range(60):
        c.observe_shown(0.5 + i * 0.01)
    c.update(1, waiting=10, utilisation=0.0)
    assert c.rate_per_s == 10.5
    pinned = controller(pinned_per_s=3.0)
    for i in range(20):
        pinned.observe(9.0, stamp=True, now=i)
    assert pinned.update(20, waiting=100, utilisation=1.0).decision == "pinned"
    assert pinned.rate_per_s == 3.0


def test_old_samples_leave_the_window() -> None:
    c = controller()
    for i in range(20):
        c.observe(9.0, stamp=True, now=i * 0.01)
    c.update(100, waiting=1, utilisation=0.5)
    assert c.last.p99_s == 0.0


def test_percentile() -> None:
    assert percentile([], 0.99) == 0.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert percentile([1.0, 2.0], 0.5) == 1.0


def test_limiter_refills_and_bounds_its_memory() -> None:
    limiter = KeyedRateLimiter(rate_per_s=1.0, burst=2, keys_max=3)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) == pytest.approx(1.0)
    assert limiter.take("a", 1.0) == 0.0  # one token back after a second
    for key in "bcdef":
        limiter.take(key, 1.0)
    assert len(limiter) == 3


def test_distribute_is_strict_priority_with_a_share_for_lower_lanes() -> None:
    assert distribute(5, [3, 4, 10], served_before=0) == [3, 2, 0]
    grants = distribute(100, [1000, 1000, 1000], served_before=0)
    assert grants == [80, 10, 10]
    assert distribute(10, [0, 0, 2], served_before=7) == [0, 0, 2]
    assert distribute(0, [5, 5, 5], served_before=0) == [0, 0, 0]
    with pytest.raises(ValueError):
        distribute(1, [-1, 0, 0], served_before=0)


def test_retry_after_aims_into_the_hold_near_the_head_and_spreads_far_back() -> None:
    assert retry_after_for(0.2) == 1
    assert retry_after_for(4.2) == 5  # no hold: come back at the turn
    assert retry_after_for(4.2, hold_s=4) == 3  # due 1.2 s after the return: held
    assert retry_after_for(20, hold_s=4) == 18
    assert retry_after_for(1.0, hold_s=4) == 1
    for eta, low, high in ((30, 15, 27), (1000, 30, 54)):
        # the spread applies after the cap: a crowd far back spreads out
        spread = {retry_after_for(eta, hold_s=4) for _ in range(300)}
        assert min(spread) >= low and max(spread) <= high and len(spread) > 5


def test_slots_bound_the_holders_and_the_waiters() -> None:
    async def scenario() -> list[bool]:
        slots = Slots(1, waiters_max=1)
        assert await slots.acquire(0)
        waiter = asyncio.create_task(slots.acquire(5))
        await asyncio.sleep(0)
        refused = await slots.acquire(5)  # a second waiter is over the bound
        slots.release()  # hands the slot to the waiter
        got = await waiter
        timed_out = await asyncio.wait_for(slots.acquire(0.05), 1)
        slots.release()
        assert slots.in_use == 0
        return [refused, got, timed_out]

    assert asyncio.run(scenario()) == [False, True, False]


def test_resized_slots_wake_waiters_at_once_and_shrink_as_work_finishes() -> None:
    async def scenario() -> None:
        slots = Slots(1, waiters_max=2)
        assert await slots.acquire(0)
        waiters = [asyncio.create_task(slots.acquire(5)) for _ in range(2)]
        await asyncio.sleep(0)
        slots.resize(3)  # two more slots: both waiters get one now
        assert await asyncio.gather(*waiters) == [True, True]
        assert (slots.in_use, slots.waiters_max) == (3, 6)
        slots.resize(1)  # nobody is interrupted; the next two releases free slots
        waiter = asyncio.create_task(slots.acquire(5))
        await asyncio.sleep(0)
        slots.release()
        slots.release()
        assert not waiter.done() and slots.in_use == 1
        slots.release()  # now at the new limit: the slot passes to the waiter
        assert await waiter
        assert slots.in_use == 1

    asyncio.run(scenario())


def test_slot_sizer_grows_with_headroom_and_shrinks_on_latency() -> None:
    sizer = SlotSizer(2, 4)
    target = 2.0
    fast = GROW_BELOW * target / 2
    assert sizer.update(100, p99_s=fast, target_s=target, demand=0.5) == 2  # slots not full
    assert sizer.update(101, p99_s=None, target_s=target, demand=3.0) == 2  # too few stamps
    assert sizer.update(102, p99_s=fast, target_s=target, demand=3.0) == 3
    assert sizer.update(103, p99_s=fast, target_s=target, demand=3.0) == 3  # latencies of 3
    assert sizer.update(102 + GROW_COOLDOWN_S, p99_s=fast, target_s=target, demand=3.0) == 4
    assert sizer.update(200, p99_s=fast, target_s=target, demand=3.0) == 4  # the ceiling
    slow = SETPOINT * target * 1.1
    assert sizer.update(201, p99_s=slow, target_s=target, demand=3.0) == 3
    assert sizer.update(202, p99_s=slow, target_s=target, demand=3.0) == 3  # cooldown
    assert sizer.update(201 + SHRINK_COOLDOWN_S, p99_s=slow, target_s=target, demand=3.0) == 2
    assert sizer.update(300, p99_s=slow, target_s=target, demand=3.0) == 2  # the floor
    pinned = SlotSizer(3, 3)
    assert pinned.update(100, p99_s=fast, target_s=target, demand=9.0) == 3
    with pytest.raises(ValueError):
        SlotSizer(3, 2)


def test_incidents_are_runs_of_bad_minutes() -> None:
    base = 1_800_000_000_000 // MINUTE_MS * MINUTE_MS
    minutes = [
        Minute(base, 100, 0, 0, 0, 0.0),
        Minute(base + MINUTE_MS, 100, 5, 0, 0, 0.0),
        Minute(base + 2 * MINUTE_MS, 100, 9, 0, 0, 0.0),
        Minute(base + 3 * MINUTE_MS, 100, 0, 0, 0, 0.0),
        Minute(base + 4 * MINUTE_MS, 100, 0, 50, 900, 1200.0),
    ]
    found = incidents_from(minutes, now_ms=base + 5 * MINUTE_MS)
    assert [i.kind for i in found] == ["long_wait", "errors"]
    assert found[0].ongoing and not found[1].ongoing
    assert found[1].errors_5xx == 14
    assert found[1].as_dict()["minutes"] == 2
