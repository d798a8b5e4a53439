"""t2i.workers: pool workers end when their parent is killed."""

from __future__ import annotations


def test_pool_workers_end_when_their_parent_is_killed(tmp_path):
    """kill -9 of a process that renders with a ProcessPoolExecutor must not leave its workers running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from t2i.workers import exit_with_parent\n"
        "def work(_):\n    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(max_workers=2, initializer=exit_with_parent)\n"
        "    for _ in range(2):\n        pool.submit(work, 0)\n"
        "    time.sleep(1.0)\n"
        "    print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by init) counts as ended
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False
