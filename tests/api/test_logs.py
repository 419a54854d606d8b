"""Server logs are written by a listener thread, and none is lost when its queue is full."""

from __future__ import annotations

import io
import logging
import threading

from uvicorn.logging import AccessFormatter

from emeterai.api.logs import logs_off_the_loop


class Recording(logging.Handler):
    """Writes like uvicorn's access handler and notes which thread wrote each line."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
        self.stream = io.StringIO()
        self.threads: list[str] = []
        if gate is not None:
            self.addFilter(lambda _: gate.wait(timeout=10) if _in_listener() else True)

    def emit(self, record: logging.LogRecord) -> None:
        self.threads.append(threading.current_thread().name)
        self.stream.write(self.format(record) + "\n")


def _in_listener() -> bool:
    return threading.current_thread() is not threading.main_thread()


def _access(logger: logging.Logger, path: str) -> None:
    # As uvicorn's httptools protocol logs a response.
    logger.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5", "GET", path, "1.1", 200)


def test_access_lines_are_written_by_another_thread_formatted_as_uvicorn_would() -> None:
    logger = logging.getLogger("test.logs.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Recording()
    logger.handlers = [handler]
    try:
        with logs_off_the_loop(("test.logs.access",)):
            assert logger.handlers != [handler]
            for number in range(50):
                _access(logger, f"/page/{number}")
        assert logger.handlers == [handler]  # restored on the way out
        lines = handler.stream.getvalue().splitlines()
        assert lines == [f'10.0.0.1:5 - "GET /page/{n} HTTP/1.1" 200 OK' for n in range(50)]
        assert threading.current_thread().name not in handler.threads
    finally:
        logger.handlers = []


def test_a_full_queue_writes_at_once_and_loses_no_line() -> None:
    logger = logging.getLogger("test.logs.full")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    gate = threading.Event()
    handler = Recording(gate)
    logger.handlers = [handler]
    try:
        with logs_off_the_loop(("test.logs.full",), records_max=1):
            _access(logger, "/1")  # the listener takes it and waits at the gate
            for _ in range(200):
                if logger.handlers[0].queue.empty():  # type: ignore[attr-defined]
                    break
                threading.Event().wait(0.01)
            _access(logger, "/2")  # fills the queue
            _access(logger, "/3")  # finds it full: written here, at once
            assert handler.stream.getvalue() == '10.0.0.1:5 - "GET /3 HTTP/1.1" 200 OK\n'
            assert handler.threads == [threading.main_thread().name]
            gate.set()
        paths = [line.split()[3] for line in handler.stream.getvalue().splitlines()]
        assert paths == ["/3", "/1", "/2"]
    finally:
        logger.handlers = []


def test_loggers_without_handlers_are_left_as_they_are() -> None:
    logger = logging.getLogger("test.logs.bare")
    with logs_off_the_loop(("test.logs.bare",)):
        assert logger.handlers == []
