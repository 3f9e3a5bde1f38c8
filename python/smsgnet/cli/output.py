"""What the CLI prints: results on stdout, errors and logs on stderr, and the exit codes.

An error is reported once, by :func:`report_error` in ``main``: as one line
``smsgnet <command>: <message>`` on stderr, or with ``--json`` as one JSON
object on stdout, ``{"error", "type", "exit", "command", ...}``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from smsgnet.exceptions import HandshakeRefused, PeerAuthenticationError, SmsgnetError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure the CLI reports itself, with its exit code.

    ``kind`` is the ``type`` of the JSON error object; ``details`` are merged
    into it (a ping summary, the error reply), so ``--json`` still prints one object.
    """

    def __init__(self, message: str, code: int = EXIT_FAILURE, *, kind: str = "Error",
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.details = details or {}


class UsageError(SystemExit):
    """A command line argparse refused (exit 2). A ``SystemExit`` so that
    ``build_parser().parse_args()`` still exits when called outside ``main``."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.prog = prog
        self.message = message

    def __str__(self) -> str:
        return f"{self.prog}: error: {self.message} (see '{self.prog} --help')"


def say(text: str = "") -> None:
    """One line of plain output on stdout, flushed."""
    print(text, flush=True)


def say_json(obj: Any) -> None:
    """One JSON object on one line of stdout, flushed."""
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def describe(e: SmsgnetError) -> str:
    """The one-line text of a library error as the CLI shows it."""
    if isinstance(e, HandshakeRefused):
        return f"handshake refused by peer: {e.reason}"
    if isinstance(e, PeerAuthenticationError):
        return f"peer authentication failed: {e}"
    return str(e) or type(e).__name__


def report_error(command: str | None, e: BaseException, *, as_json: bool) -> int:
    """Report ``e`` the way the command was asked to; returns the exit code."""
    prog = f"smsgnet {command}" if command else "smsgnet"
    details: dict[str, Any] = {}
    if isinstance(e, UsageError):
        code, kind, text, line = EXIT_USAGE, "UsageError", e.message, str(e)
    elif isinstance(e, CliError):
        code, kind, text = e.code, e.kind, str(e)
        details = e.details
        line = f"{prog}: {text}"
    elif isinstance(e, SmsgnetError):
        code, kind, text = EXIT_FAILURE, type(e).__name__, describe(e)
        if isinstance(e, HandshakeRefused):
            details = {"reason": e.reason}
        line = f"{prog}: {text}"
    elif isinstance(e, KeyboardInterrupt):
        code, kind, text = EXIT_INTERRUPTED, "Interrupted", "interrupted"
        line = f"{prog}: {text}"
    else:
        raise e
    if as_json:
        say_json({"error": text, "type": kind, "exit": code, "command": command, **details})
    else:
        print(line, file=sys.stderr, flush=True)
    return code


def setup_logging(verbose: int) -> None:
    """Logs go to stderr: warnings, ``-v`` INFO, ``-vv`` DEBUG (``-vvv`` adds websockets' frames)."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(stream=sys.stderr, level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("smsgnet").setLevel(level)
    # websockets logs every frame at DEBUG: only from -vvv.
    logging.getLogger("websockets").setLevel(
        logging.WARNING if verbose <= 1 else logging.INFO if verbose == 2 else logging.DEBUG)
