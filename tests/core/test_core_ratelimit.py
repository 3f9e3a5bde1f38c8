"""TokenBucket with an injected clock: no sleeps."""

from __future__ import annotations

import math
import time

import pytest

from smsgnet._core import TokenBucket

T0 = 1000.0


def drain(bucket: TokenBucket, now: float) -> int:
    taken = 0
    while bucket.allow(now):
        taken += 1
        assert taken <= 10_000
    return taken


def test_burst_then_empty():
    bucket = TokenBucket(100, 50.0)
    assert (bucket.burst, bucket.rate) == (100, 50.0)
    assert drain(bucket, T0) == 100
    assert bucket.allow(T0) is False
    assert bucket.tokens(T0) == pytest.approx(0.0)


def test_refill_rate():
    bucket = TokenBucket(100, 50.0)
    drain(bucket, T0)
    assert drain(bucket, T0 + 1.0) == 50
    assert drain(bucket, T0 + 1.5) == 25


def test_fractional_refill():
    # t0 = 0.0 keeps the float arithmetic exact at the boundaries; see
    # test_core_bugs.py for the same check at realistic clock values
    t0 = 0.0
    bucket = TokenBucket(5, 50.0)
    drain(bucket, t0)
    assert bucket.allow(t0 + 0.010) is False  # half a token is not enough
    assert bucket.tokens(t0 + 0.010) == pytest.approx(0.5)
    assert bucket.allow(t0 + 0.020) is True  # one whole token after 20 ms
    assert bucket.allow(t0 + 0.020) is False
    # fractions add up across calls
    for step in (0.025, 0.030, 0.035):
        assert bucket.allow(t0 + step) is False
    assert bucket.allow(t0 + 0.045) is True


def test_fractional_refill_away_from_boundaries():
    bucket = TokenBucket(5, 50.0)
    drain(bucket, T0)
    assert bucket.allow(T0 + 0.019) is False
    assert bucket.allow(T0 + 0.021) is True
    assert bucket.allow(T0 + 0.021) is False
    assert bucket.tokens(T0 + 0.031) == pytest.approx(0.55)


def test_no_refill_beyond_burst():
    bucket = TokenBucket(3, 1000.0)
    bucket.allow(T0)
    assert bucket.tokens(T0 + 3600) == 3.0
    assert drain(bucket, T0 + 3600) == 3
    assert drain(bucket, T0 + 3600.001) == 1


def test_zero_rate_never_refills():
    bucket = TokenBucket(2, 0.0)
    assert drain(bucket, T0) == 2
    assert bucket.allow(T0 + 1e9) is False


def test_time_going_backwards_refills_nothing():
    bucket = TokenBucket(10, 10.0)
    drain(bucket, T0)
    assert bucket.allow(T0 - 100) is False
    assert bucket.tokens(T0 - 100) == 0.0
    # and the clock going forward again refills from the latest time seen, not from T0 - 100
    assert bucket.tokens(T0 + 0.5) == pytest.approx(5.0)
    assert drain(bucket, T0 + 0.5) == 5


def test_first_call_starts_full_whatever_the_clock():
    for start in (0.0, -5.0, 1e12):
        bucket = TokenBucket(4, 1.0)
        assert bucket.tokens(start) == 4.0
        assert drain(bucket, start) == 4


def test_default_clock_is_wall_time():
    bucket = TokenBucket(2, 0.0)
    assert bucket.allow() is True
    assert bucket.allow(time.time()) is True
    assert bucket.allow() is False
    assert 0.0 <= bucket.tokens() < 1.0


def test_non_finite_now_is_value_error():
    bucket = TokenBucket(2, 1.0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            bucket.allow(bad)
        with pytest.raises(ValueError):
            bucket.tokens(bad)
    with pytest.raises(TypeError):
        bucket.allow("now")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("burst", "rate"),
    [(0, 1.0), (1, -1.0), (1, math.nan), (1, math.inf), (1, -math.inf)],
    ids=["burst_0", "rate_negative", "rate_nan", "rate_inf", "rate_minus_inf"],
)
def test_constructor_value_errors(burst, rate):
    with pytest.raises(ValueError):
        TokenBucket(burst, rate)


def test_constructor_type_and_range_errors():
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(-1, 1.0)
    with pytest.raises(TypeError):
        TokenBucket(1.5, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TokenBucket(1, "fast")  # type: ignore[arg-type]
    assert TokenBucket(1, 3).rate == 3.0  # an int rate is fine
