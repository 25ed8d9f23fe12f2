"""Client sync: the pure engine (``engine``) and the thread that performs its I/O (``worker``).

See docs/sync.md for the design and ``engine``'s docstring for the state diagram.
"""

from tapes_e2e.sync.engine import EngineConfig, EngineState, decide
from tapes_e2e.sync.worker import (
    PulledBatch,
    SyncError,
    SyncRunner,
    SyncWorker,
    run_sync,
)

__all__ = [
    "EngineConfig",
    "EngineState",
    "PulledBatch",
    "SyncError",
    "SyncRunner",
    "SyncWorker",
    "decide",
    "run_sync",
]
