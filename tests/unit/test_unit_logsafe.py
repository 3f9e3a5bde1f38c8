"""logsafe: peer-controlled strings cannot forge or flood log lines (issue 8, point 3).

``clip`` escapes and caps what a peer chose; ``WarningLimiter`` bounds the
number of warning lines per category for the whole node and reports what it
suppressed.
"""

from __future__ import annotations

import ast
import io
import logging
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgnet.logsafe import DEFAULT_LIMIT, WarningLimiter, clip

MB = 1024 * 1024
FORGED = "00112233445566778899aabbccddeeff\n2025-01-01 00:00:00 CRITICAL smsgnet: node compromised"


def log_to_buffer(name: str) -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(f"test.logsafe.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, buf


# ---------------------------------------------------------------------------
# clip: forging


def test_a_newline_in_an_id_cannot_start_a_new_log_line():
    logger, buf = log_to_buffer("forge")
    logger.warning("refused %s: %s", FORGED, "peer not authorized")
    assert len(buf.getvalue().splitlines()) == 2  # the attack works without clip
    buf.truncate(0), buf.seek(0)
    logger.warning("refused %s: %s", clip(FORGED), "peer not authorized")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    assert "\\n2025-01-01 00:00:00 CRITICAL" in lines[0]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("a\nb", "a\\nb"), ("a\rb", "a\\rb"), ("a\tb", "a\\tb"), ("\x1b[31mred", "\\x1b[31mred"),
     ("\x00", "\\x00"), ("\x7f\x85", "\\x7f\\x85"), ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
     ("\u202egnp.exe", "\\u202egnp.exe"), ("\ud800", "\\ud800"), ("back\\slash", "back\\\\slash"),
     ("\U000e0041", "\\U000e0041")],
    ids=["LF", "CR", "tab", "ANSI", "NUL", "DEL+NEL", "U+2028/9", "bidi-override", "lone-surrogate",
         "backslash", "tag-char"],
)
def test_control_and_invisible_characters_are_escaped(raw, shown):
    assert clip(raw) == shown


def test_a_literal_backslash_n_is_not_confused_with_an_escaped_newline():
    assert clip("a\\nb") != clip("a\nb")


def test_printable_text_is_shown_as_is():
    for text in ("alice", "node-42 (worker)", "Zoë 東京 🚀", "<script>&amp;", "x" * DEFAULT_LIMIT):
        assert clip(text) == text


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_clip_is_one_line_and_reads_back_as_the_original(text):
    shown = clip(text, limit=10_000)
    assert len(shown.splitlines()) <= 1 and "\n" not in shown and "\r" not in shown
    assert ast.literal_eval('"' + shown.replace('"', '\\"') + '"') == text


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=500), limit=st.integers(1, 200))
def test_clip_never_exceeds_its_limit_plus_the_counter(text, limit):
    shown = clip(text, limit)
    assert len(shown) <= limit + len(f"…({len(text)} more)")
    assert len(shown.splitlines()) <= 1


# ---------------------------------------------------------------------------
# clip: flooding


@pytest.mark.parametrize("fill", ["x", "\n", "\x00", "\U0001f680", "\U000e0041"], ids=repr)
def test_a_1_mb_string_yields_a_bounded_line(fill):
    big = fill * MB
    shown = clip(big)
    assert len(shown) <= DEFAULT_LIMIT + 25
    assert shown.endswith(" more)") and "\n" not in shown


def test_the_counter_says_how_much_was_left_out():
    assert clip("x" * 1000, 10) == "x" * 10 + "…(990 more)"
    assert clip("\n" * 100, 10) == "\\n" * 5 + "…(95 more)"


def test_a_1_mb_bytes_value_yields_a_bounded_line_counted_in_bytes():
    shown = clip(b"\xff" * MB)
    assert len(shown) <= DEFAULT_LIMIT + 30
    assert shown.startswith("\\xff\\xff") and shown.endswith(f"…({MB - DEFAULT_LIMIT // 4} more bytes)")


def test_bytes_are_decoded_as_utf8_with_invalid_bytes_escaped():
    assert clip(b"ok \xc3\xa9 \xff\n") == "ok é \\xff\\n"
    assert clip(bytearray(b"ab")) == "ab" and clip(memoryview(b"ab")) == "ab"


def test_other_objects_are_shown_through_str():
    assert clip(ValueError("bad\nvalue")) == "bad\\nvalue"
    assert clip(12) == "12"


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError):
        clip("x", 0)


# ---------------------------------------------------------------------------
# WarningLimiter


def test_1000_warnings_in_a_burst_produce_at_most_n_lines_then_the_suppressed_count():
    logger, buf = log_to_buffer("burst")
    limiter = WarningLimiter(per_minute=10)
    logged = sum(limiter.warn(logger, "drop", "dropped frame from %s", "peer", now=100.0) for _ in range(1000))
    assert logged == 10
    assert len(buf.getvalue().splitlines()) == 10
    assert limiter.suppressed() == {"drop": 990}
    # one refill later the next line says what was dropped meanwhile
    assert limiter.warn(logger, "drop", "dropped frame from %s", "peer", now=106.0)
    last = buf.getvalue().splitlines()[-1]
    assert last == "WARNING test.logsafe.burst: dropped frame from peer (990 similar suppressed)"
    assert limiter.suppressed() == {}


def test_a_steady_flood_is_held_to_the_rate_whatever_the_number_of_connections():
    limiter = WarningLimiter(per_minute=6)
    # 20 "connections" each warning 50 times a second for 3 minutes, sharing one limiter
    allowed = 0
    for tick in range(180 * 10):
        now = tick / 10
        for _conn in range(20):
            for _ in range(5):
                allowed += limiter.take("drop", now) is not None
    assert 6 + 6 * 3 - 1 <= allowed <= 6 + 6 * 3 + 1


def test_categories_are_limited_separately():
    limiter = WarningLimiter(per_minute=2)
    assert [limiter.take("drop", 0.0) is not None for _ in range(3)] == [True, True, False]
    assert [limiter.take("handshake-refused", 0.0) is not None for _ in range(3)] == [True, True, False]


def test_the_number_of_categories_is_bounded():
    limiter = WarningLimiter(per_minute=1, max_categories=4)
    allowed = sum(limiter.take(f"cat{i}", 0.0) is not None for i in range(1000))
    assert allowed == 4 + 1  # four categories plus the shared "other"
    assert len(limiter._buckets) <= 5


def test_per_minute_zero_suppresses_everything_and_still_counts():
    logger, buf = log_to_buffer("zero")
    limiter = WarningLimiter(per_minute=0)
    assert not any(limiter.warn(logger, "drop", "x", now=float(t)) for t in range(100))
    assert buf.getvalue() == "" and limiter.suppressed() == {"drop": 100}


def test_report_suppressed_logs_the_counts_once():
    logger, buf = log_to_buffer("report")
    limiter = WarningLimiter(per_minute=1)
    for _ in range(5):
        limiter.take("drop", 0.0)
    assert limiter.report_suppressed(logger) == 4
    assert buf.getvalue().splitlines() == ["WARNING test.logsafe.report: 4 drop warning(s) suppressed by the rate limit"]
    assert limiter.report_suppressed(logger) == 0


def test_the_limiter_counts_every_call_exactly_under_threads():
    limiter = WarningLimiter(per_minute=5)
    results: list[int | None] = []
    lock = threading.Lock()

    def hammer():
        mine = [limiter.take("drop", 0.0) for _ in range(2000)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowed = [r for r in results if r is not None]
    assert len(allowed) == 5 and limiter.suppressed() == {"drop": 8000 - 5}


@pytest.mark.parametrize("kwargs", [{"per_minute": -1}, {"burst": 0}, {"max_categories": 0}])
def test_bad_limiter_settings_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        WarningLimiter(**kwargs)
