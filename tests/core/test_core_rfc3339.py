"""One RFC 3339 parser (issue 8 #6): ``smsgnet.parse_timestamp`` (Python) and the
receive step's ``_core.parse_timestamp`` (Rust) accept exactly the same texts and
agree on the instant.

Cause: Python had its own regex parser: ``+01:75`` parsed in Python and not in
Rust, year 0 the other way round, and a leap second at 9999-12-31 raised
OverflowError instead of ValueError. Fix: Python builds its datetime from the
Rust parser's fields (``_core.parse_timestamp_fields``); the rules are in
``rust/rfc3339.rs``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smsgnet import _core, parse_timestamp

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def python_seconds(ts: str) -> float | None:
    try:
        d = parse_timestamp(ts)
    except ValueError:
        return None
    return (d - EPOCH) / dt.timedelta(seconds=1)


def assert_agree(ts: str) -> None:
    rust, python = _core.parse_timestamp(ts), python_seconds(ts)
    assert (rust is None) == (python is None), (ts, rust, python)
    if rust is not None:
        assert python is not None
        # Python truncates to microseconds; Rust keeps nanoseconds in a float
        assert -2e-6 < rust - python < 1e-6 + 2e-6, (ts, rust, python)


#: (text, parses?) — the disagreements of issue 8 first, then every rule's edges.
CORPUS = [
    ("2025-01-01T00:00:00+01:75", False),
    ("0000-01-01T00:00:00Z", False),
    ("9999-12-31T23:59:60Z", False),
    ("2016-12-31T23:59:60Z", False),
    ("2025-01-01T00:00:00Z", True),
    ("2025-01-01T00:00:00.5Z", True),
    ("2025-01-01T00:00:00.123456789Z", True),
    ("2025-01-01T00:00:00.1234567891234Z", True),
    ("2025-01-01T00:00:00." + "9" * 50 + "Z", True),
    ("2025-01-01T00:00:00.Z", False),
    ("2025-01-01T00:00:00,5Z", False),
    ("2025-06-30T23:59:59.5+02:00", True),
    ("2025-01-01T00:00:00-00:00", True),
    ("2025-01-01T00:00:00+23:59", True),
    ("2025-01-01T00:00:00+24:00", False),
    ("2025-01-01T00:00:00+0100", False),
    ("2025-01-01T00:00:00+01", False),
    ("2025-01-01t00:00:00z", True),
    ("2025-01-01 00:00:00Z", True),
    ("2025-01-01_00:00:00Z", False),
    ("0001-01-01T00:00:00Z", True),
    ("0001-01-01T00:00:00+23:59", True),
    ("9999-12-31T23:59:59.999999999Z", True),
    ("9999-12-31T23:59:59-23:59", True),
    ("2024-02-29T12:00:00Z", True),
    ("2023-02-29T12:00:00Z", False),
    ("2100-02-29T12:00:00Z", False),
    ("2000-02-29T12:00:00Z", True),
    ("2025-04-31T00:00:00Z", False),
    ("2025-00-01T00:00:00Z", False),
    ("2025-01-00T00:00:00Z", False),
    ("2025-01-01T24:00:00Z", False),
    ("2025-01-01T23:60:00Z", False),
    ("2025-1-01T00:00:00Z", False),
    ("2025-01-01T00:00:00", False),
    ("2025-01-01T00:00:00Zjunk", False),
    (" 2025-01-01T00:00:00Z", False),
    ("2025-01-01T00:00:00Z\n", False),
    ("２０２５-01-01T00:00:00Z", False),
    ("2025-01-01T00:00:00.\u0663Z", False),
    ("+2025-01-01T00:00:00Z", False),
    ("", False),
]


@pytest.mark.parametrize(("ts", "parses"), CORPUS, ids=[repr(c[0])[:40] for c in CORPUS])
def test_both_parsers_give_the_same_verdict_on_the_edge_cases(ts, parses):
    assert (_core.parse_timestamp(ts) is not None) == parses
    assert_agree(ts)


def test_python_keeps_the_written_offset_and_truncates_to_microseconds():
    d = parse_timestamp("2025-06-30T23:59:59.1234569+02:00")
    assert (d.hour, d.microsecond, d.utcoffset()) == (23, 123456, dt.timedelta(hours=2))
    assert parse_timestamp("0001-01-01T00:00:00+23:59").utcoffset() == dt.timedelta(hours=23, minutes=59)
    assert parse_timestamp("2025-01-01T00:00:00-00:00").tzinfo is dt.timezone.utc
    with pytest.raises(ValueError):
        parse_timestamp(b"2025-01-01T00:00:00Z")  # type: ignore[arg-type]


DIGITS = st.text("0123456789", min_size=1, max_size=3)


@st.composite
def near_timestamps(draw):
    """Texts close to RFC 3339: valid ones, and ones with one field off."""

    def two(lo, hi):
        return draw(st.one_of(st.integers(lo, hi).map(lambda v: f"{v:02d}"), DIGITS))

    year = draw(st.one_of(st.integers(0, 9999).map(lambda v: f"{v:04d}"), DIGITS))
    sep = draw(st.sampled_from(["T", "t", " ", "_"]))
    frac = draw(st.one_of(st.just(""), st.text("0123456789", min_size=0, max_size=12).map(lambda f: "." + f)))
    zone = draw(
        st.one_of(
            st.sampled_from(["Z", "z", "", "+0100"]),
            st.tuples(st.sampled_from("+-"), st.integers(0, 30), st.integers(0, 80)).map(
                lambda z: f"{z[0]}{z[1]:02d}:{z[2]:02d}"
            ),
        )
    )
    return f"{year}-{two(0, 13)}-{two(0, 32)}{sep}{two(0, 25)}:{two(0, 61)}:{two(0, 61)}{frac}{zone}"


@settings(max_examples=800, deadline=None)
@given(near_timestamps())
@example("2025-01-01T00:00:00+01:75")
@example("0000-01-01T00:00:00Z")
def test_both_parsers_agree_on_near_timestamps(ts):
    assert_agree(ts)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_both_parsers_agree_on_any_text(ts):
    assert_agree(ts)


@settings(max_examples=500, deadline=None)
@given(st.integers(-62135596800 + 86400, 253402300799 - 86400), st.integers(0, 999_999_999),
       st.integers(-(23 * 60 + 59), 23 * 60 + 59))
def test_every_go_rfc3339nano_text_parses_to_its_instant(seconds, nanos, offset_minutes):
    from smsgnet.message import format_timestamp

    ts = format_timestamp(seconds * 1_000_000_000 + nanos, utc_offset_minutes=offset_minutes)
    rust = _core.parse_timestamp(ts)
    assert rust is not None and abs(rust - (seconds + nanos / 1e9)) < 1e-3
    assert python_seconds(ts) == pytest.approx(seconds + nanos // 1000 / 1e6, abs=1e-6)


# ---------------------------------------------------------------------------
# the formatter beside the parser (rfc3339::format_nano)


def go_rfc3339nano(ns: int, offset_minutes: int) -> str:
    """What Go's time.RFC3339Nano prints, built from datetime (years 1-9999)."""
    secs, frac = divmod(ns + offset_minutes * 60 * 10**9, 10**9)
    local = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=secs)
    text = local.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    if offset_minutes == 0:
        return text + "Z"
    h, m = divmod(abs(offset_minutes), 60)
    return f"{text}{'+' if offset_minutes > 0 else '-'}{h:02d}:{m:02d}"


@settings(max_examples=1000, deadline=None)
@given(st.integers(-62135596800 + 86400, 253402300799 - 86400), st.integers(0, 999_999_999),
       st.integers(-(23 * 60 + 59), 23 * 60 + 59))
def test_the_native_formatter_writes_what_go_prints(seconds, nanos, offset_minutes):
    ns = seconds * 1_000_000_000 + nanos
    assert _core.format_timestamp(ns, utc_offset_minutes=offset_minutes) == go_rfc3339nano(ns, offset_minutes)


def test_an_offset_beyond_23_59_or_an_instant_out_of_reach_is_refused():
    from smsgnet import ConfigError
    from smsgnet.message import format_timestamp

    assert format_timestamp(0, utc_offset_minutes=1439) == "1970-01-01T23:59:00+23:59"
    for bad in (1440, -1440, 10**6):
        with pytest.raises(ConfigError, match="utc_offset_minutes"):
            format_timestamp(0, utc_offset_minutes=bad)
    # seconds past an i64: a clear error, not a wrapped or garbled year
    with pytest.raises(ConfigError, match="too far"):
        format_timestamp(10**30)
    with pytest.raises(OverflowError):
        format_timestamp(10**40)
