"""Loaded by every Python process that ``scripts/faketime-pytest`` starts (tests, CLI and server
subprocesses alike).

libfaketime 0.9.10 (Debian 12) moves the deadline of ``clock_nanosleep(CLOCK_MONOTONIC,
TIMER_ABSTIME)`` by the fake offset even when told to leave the monotonic clock alone, so
Python's ``time.sleep`` fails with EINVAL. Timed waits on locks and events are not affected, so
under faketime ``time.sleep`` waits on an event instead. Nothing else is changed.
"""

import os
import threading
import time

if os.environ.get("FAKETIME") or os.environ.get("FAKETIME_SHIM"):

    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        threading.Event().wait(seconds)

    time.sleep = _sleep
