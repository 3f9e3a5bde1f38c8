"""Which event loop a command runs on: ``--loop asyncio|uvloop``.

uvloop is an optional extra (``pip install 'smsgnet[uvloop]'``). ``serve`` and
``bench`` use it when it is importable and ``--loop`` is not given; asking for
it without it installed is a usage error that names the extra. It is imported
only by the commands that run a loop, and only then.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOPS = ("asyncio", "uvloop")
MISSING = "uvloop is not installed: pip install 'smsgnet[uvloop]'"


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop.new_event_loop``, or None when uvloop cannot be imported."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(text: str) -> str:
    """argparse ``type=`` of ``--loop``: ``asyncio``, or ``uvloop`` when it is installed."""
    if text not in LOOPS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(LOOPS)})")
    if text == "uvloop" and uvloop_factory() is None:
        raise argparse.ArgumentTypeError(MISSING)
    return text


def add_loop(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loop", metavar="asyncio|uvloop", type=loop_name, default=None,
                   help="event loop to run on (default: uvloop when installed, else asyncio; "
                        "uvloop needs pip install 'smsgnet[uvloop]')")


def resolve(choice: str | None) -> str:
    """The loop a command runs on: ``choice``, or uvloop when importable, else asyncio."""
    if choice is not None:
        return choice
    return "uvloop" if uvloop_factory() is not None else "asyncio"


def run(coro: Coroutine[Any, Any, T], loop: str) -> T:
    """``asyncio.run(coro)`` on the named loop (from :func:`resolve`)."""
    factory = uvloop_factory() if loop == "uvloop" else None
    if loop == "uvloop" and factory is None:  # checked by --loop already; kept for direct callers
        coro.close()
        raise ImportError(MISSING)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
