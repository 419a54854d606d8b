"""`emeterai worker`: one worker in this process, or a supervisor of N worker processes.

SIGTERM or SIGINT: each worker finishes the document in hand, then stops; the supervisor
passes the signal on and waits for them. A worker process that dies is started again (with
backoff); its documents come back to the queue when their lease runs out.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from types import FrameType

from emeterai.config import Settings
from emeterai.jobs.config import JobSettings
from emeterai.jobs.worker import Worker
from emeterai.runtime import build_runtime
from emeterai.stamping.signing import InProcessSigner, load_material

log = logging.getLogger("emeterai.jobs")

RESTART_DELAY_MAX_S = 60.0
HEALTHY_RUN_S = 30.0


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s",
    )


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the document in hand, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_worker(settings: Settings, limits: JobSettings, *, parent_pid: int | None = None) -> int:
    """One worker in this process, until a signal. Returns how many documents it stamped."""
    runtime = build_runtime(settings)
    try:
        signer = InProcessSigner(load_material(settings), timestamp_url=settings.timestamp_url)
        worker = Worker(runtime, signer, limits)
        _stop_on_signals(worker.stop)
        worker.run_forever(parent_pid=parent_pid)
        return worker.stamped
    finally:
        runtime.close()


def _child(settings: Settings, limits: JobSettings, parent_pid: int) -> None:
    configure_logging()
    run_worker(settings, limits, parent_pid=parent_pid)


def run_workers(settings: Settings, limits: JobSettings, *, processes: int) -> None:
    if processes == 1:
        run_worker(settings, limits)
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked locks
    stop = threading.Event()
    _stop_on_signals(stop)
    children: dict[int, multiprocessing.process.BaseProcess] = {}
    started_at: dict[int, float] = {}
    delays: dict[int, float] = {}

    def start(slot: int) -> None:
        child = context.Process(
            target=_child, args=(settings, limits, os.getpid()), name=f"emeterai-worker-{slot}"
        )
        child.start()
        children[slot] = child
        started_at[slot] = time.monotonic()

    for slot in range(processes):
        start(slot)
    log.info("supervising %s worker processes", processes)
    restart_at: dict[int, float] = {}
    while not stop.wait(0.5):
        for slot, child in list(children.items()):
            if child.is_alive():
                continue
            if slot not in restart_at:
                healthy = time.monotonic() - started_at[slot] > HEALTHY_RUN_S
                delays[slot] = (
                    1.0 if healthy else min(RESTART_DELAY_MAX_S, delays.get(slot, 0.5) * 2)
                )
                log.warning(
                    "worker process %s exited with %s; restarting in %.0f s",
                    child.pid,
                    child.exitcode,
                    delays[slot],
                )
                restart_at[slot] = time.monotonic() + delays[slot]
            elif time.monotonic() >= restart_at.pop(slot):
                start(slot)
    for child in children.values():
        if child.is_alive() and child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)
    for child in children.values():
        child.join()
    log.info("all worker processes stopped")
