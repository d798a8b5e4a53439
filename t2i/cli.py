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


def preflight(config_name: str, argv: list[str] | None = None) -> None:
    """Before ``@hydra.main``: overrides that do not compose (an unknown key or option, a malformed value) print
    one ``error:`` line and exit with 2, instead of Hydra's several lines and exit 1."""
    from t2i.config import override_problem

    problem = override_problem(config_name, list(sys.argv[1:] if argv is None else argv))
    if problem is not None:
        sys.stderr.write(f"error: {problem}\n")
        sys.exit(2)


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("t2i").setLevel(level)
