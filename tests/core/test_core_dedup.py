"""Deduplicator with an injected clock."""

from __future__ import annotations

import math
import time

import pytest

from smsgnet._core import Deduplicator

T0 = 1_000_000.0


def test_first_time_true_then_false_within_ttl_then_true_after():
    d = Deduplicator(300.0, 1000)
    assert (d.ttl, d.max_entries, d.evicted) == (300.0, 1000, 0)
    assert d.check_and_mark("a", T0) is True
    assert d.check_and_mark("a", T0) is False
    assert d.check_and_mark("a", T0 + 299.999) is False
    assert d.check_and_mark("b", T0) is True
    assert d.check_and_mark("a", T0 + 300.001) is True  # expired after ttl
    assert d.check_and_mark("a", T0 + 300.1) is False  # and marked again


def test_contains_does_not_mark():
    d = Deduplicator(10.0, 100)
    assert d.contains("a", T0) is False
    assert d.contains("a", T0) is False
    assert len(d) == 0
    d.check_and_mark("a", T0)
    assert d.contains("a", T0 + 9.9) is True
    assert d.contains("a", T0 + 10.001) is False


def test_mark_makes_later_checks_duplicates_and_refreshes():
    d = Deduplicator(10.0, 100)
    assert d.mark("sent", T0) is None
    assert d.check_and_mark("sent", T0 + 1) is False
    d.mark("sent", T0 + 8)  # refresh: expires at T0 + 18 now
    assert d.check_and_mark("sent", T0 + 15) is False
    assert d.contains("sent", T0 + 17.9) is True
    assert d.check_and_mark("sent", T0 + 18.001) is True
    assert len(d) == 1


def test_sweep_returns_how_many_were_removed():
    d = Deduplicator(10.0, 100)
    for i in range(5):
        d.check_and_mark(f"m{i}", T0 + i)
    assert len(d) == d.len() == 5
    assert d.sweep(T0 + 9) == 0
    assert d.sweep(T0 + 12.5) == 3  # m0, m1, m2 (expired at +10, +11, +12)
    assert len(d) == 2
    assert d.sweep(T0 + 12.5) == 0
    assert d.sweep(T0 + 1000) == 2
    assert len(d) == 0
    assert d.sweep(T0 + 2000) == 0


def test_sweep_skips_refreshed_entries():
    d = Deduplicator(10.0, 100)
    d.mark("a", T0)
    d.mark("a", T0 + 5)
    assert d.sweep(T0 + 10.5) == 0  # the T0 entry was refreshed
    assert d.sweep(T0 + 15.5) == 1


def test_len_includes_expired_until_swept_or_pushed_out():
    d = Deduplicator(1.0, 100)
    d.check_and_mark("a", T0)
    d.check_and_mark("b", T0)
    assert len(d) == 2
    # each check_and_mark also drops a couple of expired entries on the way
    d.check_and_mark("c", T0 + 5)
    assert len(d) == 1
    assert d.contains("c", T0 + 5)


def test_capacity_is_bounded_and_oldest_evicted_first():
    d = Deduplicator(300.0, 3)
    for i, mid in enumerate("abcd"):
        assert d.check_and_mark(mid, T0 + i) is True
    assert len(d) == 3
    assert d.evicted == 1
    assert d.contains("a", T0 + 4) is False  # the oldest went first
    assert all(d.contains(m, T0 + 4) for m in "bcd")
    # this node's own IDs live beside the peers' and never push them out
    d.mark("e", T0 + 5)
    assert d.evicted == 1
    assert len(d) == 4
    assert all(d.contains(m, T0 + 5) for m in "bcde")
    for i in range(100):
        d.check_and_mark(f"x{i}", T0 + 6)
    assert len(d) == 4
    assert d.evicted == 101
    assert d.contains("e", T0 + 6)


def test_refreshed_entry_is_evicted_by_its_latest_use():
    d = Deduplicator(300.0, 2)  # this node's own IDs: at most per_peer (= max_entries) of them
    d.mark("a", T0)
    d.mark("b", T0 + 1)
    d.mark("a", T0 + 2)  # a is now the newest
    d.mark("c", T0 + 3)  # evicts b, not a
    assert d.contains("a", T0 + 3) and d.contains("c", T0 + 3)
    assert not d.contains("b", T0 + 3)
    assert d.evicted == 1


def test_many_refreshes_of_one_id_stay_small():
    d = Deduplicator(1.0, 4)
    for i in range(20_000):
        d.mark("same", T0 + i * 0.001)
    assert len(d) == 1
    assert d.evicted == 0
    assert d.contains("same", T0 + 20.5)


def test_two_hundred_thousand_entries():
    """Behaviour at scale (no timing asserts: a slow table would show up as a
    slow test, and in the benchmarks)."""
    n = 200_000
    d = Deduplicator(60.0, n)
    for i in range(n):
        assert d.check_and_mark(f"id-{i}", T0 + i * 0.0001)  # arrivals over 20 s
    assert len(d) == n
    assert d.evicted == 0
    assert d.check_and_mark("id-0", T0 + 30) is False
    assert d.check_and_mark(f"id-{n - 1}", T0 + 30) is False
    # at T0 + 69.99995 the first 100k (arrived before T0 + 9.99995) have expired
    later = T0 + 69.99995
    assert d.sweep(later) == 100_000
    assert len(d) == n - 100_000
    assert d.contains("id-99999", later) is False
    assert d.contains("id-100000", later) is True
    # a full table keeps working: each new ID evicts one old one
    for i in range(n):
        d.check_and_mark(f"new-{i}", later)
    assert len(d) == n
    assert d.evicted == 100_000
    assert d.sweep(T0 + 1000) == n
    assert len(d) == 0


def test_default_clock_is_wall_time():
    d = Deduplicator(60.0, 10)
    assert d.check_and_mark("a") is True
    assert d.check_and_mark("a", time.time()) is False
    assert d.contains("a") is True
    assert d.contains("a", time.time() + 61) is False
    d.mark("b")
    assert d.sweep() == 0


def test_ids_are_exact_strings():
    d = Deduplicator(60.0, 10)
    assert d.check_and_mark("", T0) is True
    assert d.check_and_mark("é", T0) is True
    assert d.check_and_mark("e\u0301", T0) is True  # not normalised
    assert d.check_and_mark("A", T0) is True
    assert d.check_and_mark("a", T0) is True
    with pytest.raises(TypeError):
        d.check_and_mark(b"a", T0)  # type: ignore[arg-type]


def test_non_finite_now_is_value_error():
    d = Deduplicator(60.0, 10)
    for bad in (math.nan, math.inf):
        for call in (d.check_and_mark, d.mark, d.contains):
            with pytest.raises(ValueError):
                call("a", bad)
        with pytest.raises(ValueError):
            d.sweep(bad)


@pytest.mark.parametrize(
    ("ttl", "max_entries"),
    [(0.0, 10), (-1.0, 10), (math.nan, 10), (math.inf, 10), (60.0, 0)],
    ids=["ttl_0", "ttl_negative", "ttl_nan", "ttl_inf", "max_entries_0"],
)
def test_constructor_value_errors(ttl, max_entries):
    with pytest.raises(ValueError):
        Deduplicator(ttl, max_entries)


def test_constructor_type_and_range_errors():
    with pytest.raises(ValueError, match="max_entries"):
        Deduplicator(60.0, -1)
    with pytest.raises(TypeError):
        Deduplicator(60.0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Deduplicator("60", 10)  # type: ignore[arg-type]
