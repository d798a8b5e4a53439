"""Helpers shared by the command-line tools: one-line errors and logging set-up."""

from __future__ import annotations

import functools
import logging
import sys

from t2i.errors import T2IError

log = logging.getLogger("t2i")


def guarded(fn):
    """Run a tool's main function; a :class:`T2IError` prints one line and exits with status 2.

    Nothing below the tool prints a traceback for a user mistake; real bugs still raise.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except T2IError as exc:
            sys.stderr.write(f"error: {exc}\n")
            sys.exit(2)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted; the last checkpoint written is kept\n")
            sys.exit(130)

    return wrapper


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("t2i").setLevel(level)
