"""Server logs written by a thread of their own, never by the event loop.

uvicorn writes an access line for every response from the event loop's thread. Under a
rush that is a blocking write for each of thousands of queued answers, and each write
gives up the GIL to the process's other threads, so the loop waits its turn to get it
back; the spike benchmark found it behind a third of the cost of sending a response.
Here the loggers' own handlers move behind a bounded queue served by a listener thread.
When the queue is full a record is written at once, as before: no line is lost and no
memory grows.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import QueueHandler, QueueListener

# uvicorn's own configuration: "uvicorn.error" propagates to "uvicorn"; "uvicorn.access"
# has its handler and does not propagate.
LOGGERS = ("uvicorn", "uvicorn.access")
RECORDS_MAX = 10_000


class _Handoff(QueueHandler):
    def __init__(self, records: queue.Queue[logging.LogRecord], handlers: list[logging.Handler]):
        super().__init__(records)
        self._handlers = handlers

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The record stays in this process: the listener's handlers format it themselves
        # (uvicorn's access formatter needs its arguments, which the default would merge).
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            for handler in self._handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


class _Listener(QueueListener):
    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]  # waits for room


@contextmanager
def logs_off_the_loop(
    names: tuple[str, ...] = LOGGERS, records_max: int = RECORDS_MAX
) -> Iterator[None]:
    """While inside, the named loggers' handlers write from a listener thread."""
    moved: list[tuple[logging.Logger, list[logging.Handler], _Listener]] = []
    try:
        for name in names:
            logger = logging.getLogger(name)
            handlers = list(logger.handlers)
            if not handlers or any(isinstance(h, _Handoff) for h in handlers):
                continue
            records: queue.Queue[logging.LogRecord] = queue.Queue(records_max)
            listener = _Listener(records, *handlers, respect_handler_level=True)
            listener.start()
            logger.handlers = [_Handoff(records, handlers)]
            moved.append((logger, handlers, listener))
        yield
    finally:
        for logger, handlers, listener in reversed(moved):
            logger.handlers = handlers
            listener.stop()  # writes what is still queued
