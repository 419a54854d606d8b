"""Fault injection for crash tests: a named point kills this process with SIGKILL.

Points are switched on only through `EMETERAI_FAULT_POINTS`; production never sets it.
"""

from __future__ import annotations

import os
import signal


def fault_point(enabled: str, name: str) -> None:
    if enabled and name in {point.strip() for point in enabled.split(",")}:
        os.kill(os.getpid(), signal.SIGKILL)
