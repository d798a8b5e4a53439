"""Worker processes that do not outlive their parent (imports nothing but the standard library, so a render
worker stays free of torch)."""

from __future__ import annotations

import os


def exit_with_parent() -> None:
    """Worker-process initializer: end this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    A ``ProcessPoolExecutor`` whose parent is killed with ``kill -9`` otherwise leaves its workers running.
    Elsewhere it does nothing.
    """
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
