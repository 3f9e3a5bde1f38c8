"""Log lines a peer can neither flood nor forge.

Two tools, for every log line that carries something a peer chose (an ID, a
name, a refusal reason, a header value, an error message that quotes input):

* :func:`clip` renders such a value for a log line or an error message:
  at most ``limit`` characters of it are shown, the rest is counted
  (``…(N more)``), and every character that is not printable (newlines,
  carriage returns, tabs, other control characters, U+2028/U+2029, bidi
  overrides, lone surrogates) and the backslash itself are escaped the way
  :func:`repr` escapes them. The result never holds a line break, so a peer
  cannot start a forged log line, and its length is bounded whatever the
  input (a 1 MB string costs O(limit) work, not O(1 MB)).

* :class:`WarningLimiter` rate-limits warnings per *category* for the whole
  node (one limiter shared by every connection, not one per connection): at
  most ``per_minute`` lines per category per minute, with a burst of the same
  size. What it suppresses is counted, and the count is appended to the next
  line it lets through (or logged by :meth:`WarningLimiter.report_suppressed`,
  e.g. at stop). Categories are fixed strings chosen by the code
  (``"drop"``, ``"handshake-refused"``), never peer data; past
  ``max_categories`` distinct ones, the rest share the category ``"other"``,
  so the limiter's own memory is bounded too.

Typical use::

    warnings = WarningLimiter(per_minute=30)
    warnings.warn(log, "handshake-refused", "refused handshake from %s (id %s): %s",
                  remote_address, clip(peer_id, 64), clip(reason))
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from smsgnet import _core

__all__ = ["DEFAULT_LIMIT", "clip", "WarningLimiter"]

#: Characters of a peer-controlled value :func:`clip` shows by default.
DEFAULT_LIMIT = 120

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c: str) -> str:
    e = _ESCAPES.get(c)
    if e is not None:
        return e
    if c.isprintable():
        return c
    n = ord(c)
    if n <= 0xFF:
        return f"\\x{n:02x}"
    if 0xDC80 <= n <= 0xDCFF:  # an undecodable byte (surrogateescape)
        return f"\\x{n - 0xDC00:02x}"
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def _render(text: str, limit: int) -> tuple[str, int]:
    """Escape ``text`` into at most ``limit`` characters; also return how
    many characters of ``text`` that shows."""
    head = text[:limit]
    if head.isprintable() and "\\" not in head:
        return head, len(head)
    out: list[str] = []
    used = 0
    for i, c in enumerate(head):
        esc = _escape_char(c)
        if used + len(esc) > limit:
            return "".join(out), i
        out.append(esc)
        used += len(esc)
    return "".join(out), len(head)


def clip(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` made safe for one log line: escaped, at most ``limit`` characters shown.

    ``value`` may be a ``str``, ``bytes`` (decoded as UTF-8, invalid bytes
    shown as ``\\xNN``) or anything else (``str(value)``: only pass objects
    whose ``str`` is cheap). Characters that are not printable, and the
    backslash, are escaped like :func:`repr` escapes them (``\\n``, ``\\x1b``,
    ``\\u2028``); printable non-ASCII text is kept. At most ``limit``
    characters of escaped text are shown, followed by ``…(N more)`` saying how
    many characters (bytes, for ``bytes``) of the input were left out, so the
    result is at most ``limit + 25`` characters long and never holds a line
    break. The work done is O(limit), whatever the input's length. Raises
    ``ValueError`` for ``limit < 1``.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)[: limit * 4 + 4] if not isinstance(value, bytes) else value[: limit * 4 + 4]
        total = value.nbytes if isinstance(value, memoryview) else len(value)
        text = data.decode("utf-8", "surrogateescape")
        shown, n = _render(text, limit)
        rest = total - len(text[:n].encode("utf-8", "surrogateescape"))
        return shown + _more(rest, " bytes") if rest > 0 else shown
    text = value if isinstance(value, str) else str(value)
    shown, n = _render(text, limit)
    rest = len(text) - n
    return shown + _more(rest, "") if rest > 0 else shown


def _more(n: int, unit: str) -> str:
    return f"…({n} more{unit})"


class WarningLimiter:
    """At most ``per_minute`` log lines per category per minute, for the whole node.

    Each category has its own token bucket (``_core.TokenBucket``) holding
    ``burst`` tokens (default ``per_minute``) and refilled at
    ``per_minute / 60`` per second, so a burst of any size produces at most
    ``burst`` lines and a steady flood about ``per_minute`` lines a minute.
    Lines it refuses are counted; the next line let through in that category
    ends with ``(N similar suppressed)``. ``per_minute=0`` suppresses every
    line (and still counts them). Share one limiter between all connections:
    limits per connection let N connections write N times as much.

    Thread-safe. ``clock`` (seconds, monotonic) and the ``now`` arguments
    exist for tests.
    """

    OTHER = "other"

    def __init__(self, per_minute: int = 30, burst: int | None = None, *, max_categories: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be 0 or more")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1")
        if max_categories < 1:
            raise ValueError("max_categories must be at least 1")
        self.per_minute = per_minute
        self.burst = burst if burst is not None else max(per_minute, 1)
        self.max_categories = max_categories
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _core.TokenBucket] = {}
        self._suppressed: dict[str, int] = {}

    def _category(self, category: str) -> str:
        if category in self._buckets or len(self._buckets) < self.max_categories:
            return category
        return self.OTHER

    def take(self, category: str, now: float | None = None) -> int | None:
        """Ask to log one line in ``category``.

        Returns ``None`` when the line must be dropped (it is counted), else
        the number of lines of this category dropped since the last one let
        through (0 when none), which the caller should report; the count is
        then reset.
        """
        t = self._clock() if now is None else now
        with self._lock:
            category = self._category(category)
            bucket = self._buckets.get(category)
            if bucket is None:  # at most max_categories + 1 ("other") buckets
                bucket = _core.TokenBucket(self.burst, self.per_minute / 60.0)
                self._buckets[category] = bucket
            if self.per_minute == 0 or not bucket.allow(t):
                self._suppressed[category] = self._suppressed.get(category, 0) + 1
                return None
            return self._suppressed.pop(category, 0)

    def warn(self, logger: logging.Logger, category: str, msg: str, *args: object,
             level: int = logging.WARNING, exc_info: bool = False, now: float | None = None) -> bool:
        """``logger.log(level, msg, *args)`` when ``category`` has a token left.

        Appends ``(N similar suppressed)`` when lines of this category were
        dropped since the last one. Returns True when the line was logged.
        Pass peer-controlled arguments through :func:`clip` first.
        """
        suppressed = self.take(category, now)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def suppressed(self) -> dict[str, int]:
        """Lines dropped per category since the last one each let through."""
        with self._lock:
            return dict(self._suppressed)

    def report_suppressed(self, logger: logging.Logger, level: int = logging.WARNING) -> int:
        """Log one line per category with lines still counted as dropped, reset
        the counts, and return their total (call it at stop, or now and then)."""
        with self._lock:
            pending, self._suppressed = self._suppressed, {}
        for category, n in sorted(pending.items()):
            logger.log(level, "%d %s warning(s) suppressed by the rate limit", n, category)
        return sum(pending.values())
