"""Fair replay protection (issue 8 #1): no peer can make another peer's fresh
frames stale, memory stays bounded, replays stay refused.

Each test names the cause it guards against and the fix (see the theory of
operation in rust/dedup.rs). Real frames, real crypto, injected clock.
"""

from __future__ import annotations

import math

import orjson
import pytest

from smsgnet import _core

T = 1735689600.0  # 2025-01-01T00:00:00Z
HONEST = "300c9c9603b92a4b39ed3958bf924011"
MALLORY = "6d616c6c6f72796d616c6c6f72796d61"
ME = "f35e5616160a30bf3c6e79fa73c576d4"


def ts_text(unix: float) -> str:
    """RFC 3339 with microseconds (enough for these tests), UTC."""
    import datetime as dt

    return dt.datetime.fromtimestamp(unix, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message(mid: str, ts: float, sender: str) -> bytes:
    return orjson.dumps({"id": mid, "type": "ping", "from": sender, "to": "", "ts": ts_text(ts), "payload": None})


@pytest.fixture
def ciphers():
    """One pair key per peer, as on the wire."""
    return {HONEST: _core.SmsgCipher(bytes(range(32))), MALLORY: _core.SmsgCipher(bytes(range(1, 33)))}


def receivers(ciphers, dedup, **kw):
    # the transport's wiring: one shared table, one receiver per connection, partitioned by peer
    return {peer: _core.FrameReceiver(c, dedup, sender=peer, **kw) for peer, c in ciphers.items()}


# ---------------------------------------------------------------------------
# The flood of issue 8 #1


@pytest.mark.parametrize("per_peer", [None, 50_000], ids=["no_quota", "quota_50k"])
def test_a_future_dated_flood_from_one_peer_does_not_make_another_peers_fresh_frame_stale(ciphers, per_peer):
    """Cause: one shared table whose eviction horizon was the largest evicted
    *sender-chosen* ts: 200k IDs dated now+59 s made every honest frame "stale".
    Fix: the table is partitioned by the connection's peer and an eviction only
    raises the evicting sender's own horizon; with a quota the flooder only
    ever evicts its own IDs."""
    dedup = _core.Deduplicator(360.0, 200_000, per_peer=per_peer)
    rx = receivers(ciphers, dedup)
    mallory = ciphers[MALLORY]
    honest_early = message("h-early", T, HONEST)
    assert rx[HONEST].receive(ciphers[HONEST].seal(honest_early), T)[0] == "ok"
    accepted = 0
    for i in range(200_001):
        # all dated ~59 s ahead, each a microsecond later so every one is accepted
        frame = mallory.seal(orjson.dumps({"id": f"f{i}", "from": MALLORY, "ts": ts_text(T + 59 + i * 1e-6)}))
        accepted += rx[MALLORY].receive(frame, T + 1)[0] == "ok"
    assert accepted == 200_001
    assert len(dedup) <= 200_000
    assert dedup.evicted >= 1
    assert dedup.horizon(MALLORY, T + 2) is not None and dedup.horizon(MALLORY, T + 2) >= T + 59
    assert dedup.horizon(HONEST, T + 2) in (None, T)  # at most its own (evicted) early frame
    # the honest peer's fresh frame passes
    fresh = message("h-fresh", T + 2, HONEST)
    assert rx[HONEST].receive(ciphers[HONEST].seal(fresh), T + 2) == ("ok", fresh), rx[HONEST].last_error
    # and a replay of its early frame stays refused, evicted or not
    assert rx[HONEST].receive(ciphers[HONEST].seal(honest_early), T + 3)[0] in ("duplicate", "stale")


def test_the_same_flood_with_one_constant_ts_only_hurts_the_flooder(ciphers):
    """Cause: as above, with every flood ID dated exactly now+59 s. Fix: the
    flooder's horizon reaches now+59 s after its first eviction, so the rest of
    its flood is refused ("stale") without taking any room."""
    dedup = _core.Deduplicator(360.0, 1_000, per_peer=500)
    rx = receivers(ciphers, dedup)
    mallory = ciphers[MALLORY]
    verdicts = [
        rx[MALLORY].receive(mallory.seal(orjson.dumps({"id": f"f{i}", "from": MALLORY, "ts": ts_text(T + 59)})), T)[0]
        for i in range(2_000)
    ]
    assert verdicts.count("ok") == 501 and verdicts.count("stale") == 1_499
    assert len(dedup) == 500
    fresh = message("h", T - 30, HONEST)  # even an honest clock 30 s behind
    assert rx[HONEST].receive(ciphers[HONEST].seal(fresh), T)[0] == "ok"


def test_throwaway_senders_cannot_exceed_the_memory_bounds(ciphers):
    """Cause: in open mode anyone can connect with a new key. Fix: ``max_peers``
    bounds the partitions and ``max_entries`` the IDs over all of them; a
    dropped sender's horizon survives, capped at the time it was dropped, in a
    keyed-hash bucket, so the honest peer's fresh frames still pass."""
    dedup = _core.Deduplicator(360.0, 1_000, per_peer=100, max_peers=50)
    honest = _core.FrameReceiver(ciphers[HONEST], dedup, sender=HONEST)
    for n in range(400):
        sender = f"{n:032x}"
        for i in range(10):
            dedup.check_and_mark(f"{sender}-{i}", T + n * 0.01, sender=sender)
        assert dedup.partitions <= 50
        assert len(dedup) <= 1_000
    fresh = message("h", T + 5, HONEST)
    assert honest.receive(ciphers[HONEST].seal(fresh), T + 5)[0] == "ok"


def test_dropped_senders_cannot_push_others_into_the_future():
    """Cause: a forgotten sender's horizon goes to a shared bucket; folded as
    is, a flooder's now+59 s horizon would make every sender of that bucket
    stale. Fix: the bucket keeps it capped at the time it was dropped."""
    dedup = _core.Deduplicator(360.0, 1_000, per_peer=1, max_peers=1)
    cipher = _core.SmsgCipher(bytes(range(32)))
    mallory = _core.FrameReceiver(cipher, dedup, sender=MALLORY)
    for i in range(3):
        assert mallory.receive(cipher.seal(message(f"m{i}", T + 57 + i, MALLORY)), T)[0] == "ok"
    assert dedup.horizon(MALLORY, T) == pytest.approx(T + 58)
    # a second sender takes the only partition: mallory is forgotten, capped at T
    honest = _core.FrameReceiver(cipher, dedup, sender=HONEST)
    assert honest.receive(cipher.seal(message("h1", T - 10, HONEST)), T + 0.5)[0] == "ok"
    assert dedup.forgotten == 1
    assert dedup.horizon(MALLORY, T + 1) == pytest.approx(T)  # not T + 58
    # its frames dated up to the moment it was forgotten stay refused
    assert mallory.receive(cipher.seal(message("m0", T - 1, MALLORY)), T + 1)[0] == "stale"


# ---------------------------------------------------------------------------
# Two peers, one ID; our own IDs


def test_a_peer_cannot_suppress_another_peers_message_by_sending_its_id_first(ciphers):
    """Cause: one table keyed by ID alone: first one won, so a peer that learnt
    (or guessed) the ID of another peer's broadcast could get it dropped.
    Fix: entries are (sender, ID); the same ID from another peer is delivered."""
    dedup = _core.Deduplicator(360.0, 1_000)
    rx = receivers(ciphers, dedup)
    assert rx[MALLORY].receive(ciphers[MALLORY].seal(message("the-id", T, MALLORY)), T)[0] == "ok"
    honest = message("the-id", T, HONEST)
    assert rx[HONEST].receive(ciphers[HONEST].seal(honest), T) == ("ok", honest)
    # each peer's own replay is still a duplicate
    assert rx[HONEST].receive(ciphers[HONEST].seal(honest), T + 1)[0] == "duplicate"
    assert rx[MALLORY].receive(ciphers[MALLORY].seal(message("the-id", T, MALLORY)), T + 1)[0] == "duplicate"
    assert dedup.contains("the-id", T, sender=HONEST) and dedup.contains("the-id", T, sender=MALLORY)
    assert not dedup.contains("the-id", T, sender="someone-else")


def test_ids_this_node_sealed_are_refused_from_every_peer(ciphers):
    """Cause: partitions alone would let a peer reflect our own frame back to
    us. Fix: IDs marked on send live in the local partition, checked for every
    sender, and peers' traffic never evicts them."""
    dedup = _core.Deduplicator(360.0, 10)
    rx = receivers(ciphers, dedup)
    dedup.mark("sent-by-me", T)
    for i in range(100):  # a flood that fills the peers' share many times over
        dedup.check_and_mark(f"x{i}", T, sender=MALLORY)
    for peer, cipher in ciphers.items():
        assert rx[peer].receive(cipher.seal(message("sent-by-me", T, ME)), T + 1)[0] == "duplicate"
    assert dedup.contains("sent-by-me", T + 1)


def test_our_own_evicted_ids_are_refused_by_horizon_when_local_id_is_known(ciphers):
    """Cause: sending more than ``per_peer`` messages within the TTL evicts our
    own oldest IDs, which could then be reflected. Fix: the local horizon,
    applied to frames whose ``from`` is this node (``local_id``), and only to
    those: other senders' frames are not judged by our sending volume."""
    dedup = _core.Deduplicator(360.0, 100, per_peer=2)
    honest = _core.FrameReceiver(ciphers[HONEST], dedup, sender=HONEST, local_id=ME)
    assert honest.local_id == ME and honest.sender == HONEST
    for i in range(3):
        dedup.mark(f"mine-{i}", T + i)  # mine-0 evicted at T + 2
    assert dedup.horizon(None, T + 3) == T
    reflected = message("mine-0", T, ME)
    assert honest.receive(ciphers[HONEST].seal(reflected), T + 3)[0] == "stale"
    assert honest.receive(ciphers[HONEST].seal(message("h-old", T - 1, HONEST)), T + 3)[0] == "ok"


# ---------------------------------------------------------------------------
# Defaults, limits, floor


def test_receivers_without_a_sender_share_one_partition_as_before(ciphers):
    """Cause: none; backward compatibility. Without ``sender`` or ``peer_id``
    every receiver uses the shared partition "", so a frame delivered through
    one is a duplicate through another (the old behaviour)."""
    dedup = _core.Deduplicator(360.0, 100)
    cipher = ciphers[HONEST]
    r1, r2 = _core.FrameReceiver(cipher, dedup), _core.FrameReceiver(cipher, dedup)
    assert r1.sender == r2.sender == ""
    frame = cipher.seal(message("m1", T, HONEST))
    assert r1.receive(frame, T)[0] == "ok"
    assert r2.receive(frame, T)[0] == "duplicate"
    assert _core.FrameReceiver(cipher, dedup, peer_id=HONEST).sender == HONEST


def test_a_replay_over_a_second_connection_of_the_same_peer_is_caught(ciphers):
    """Cause: a partition per *connection* would let a recorded frame be
    replayed over a fresh connection. Fix: partitions are keyed by the peer's
    node ID, shared by all its connections."""
    dedup = _core.Deduplicator(360.0, 100)
    first = _core.FrameReceiver(ciphers[HONEST], dedup, sender=HONEST)
    second = _core.FrameReceiver(ciphers[HONEST], dedup, sender=HONEST)
    frame = ciphers[HONEST].seal(message("m1", T, HONEST))
    assert first.receive(frame, T)[0] == "ok"
    assert second.receive(frame, T + 1)[0] == "duplicate"


def test_long_ids_cost_a_bounded_amount_of_memory(ciphers):
    """Cause: IDs are peer-chosen and were stored whole (up to the 1 MiB message
    limit each). Fix: IDs over 64 bytes are stored as their SHA-256; they
    still deduplicate exactly."""
    dedup = _core.Deduplicator(360.0, 100)
    rx = receivers(ciphers, dedup)
    long_id = "x" * 500_000
    frame = ciphers[HONEST].seal(message(long_id, T, HONEST))
    assert rx[HONEST].receive(frame, T)[0] == "ok"
    assert rx[HONEST].receive(frame, T + 1)[0] == "duplicate"
    assert rx[HONEST].receive(ciphers[HONEST].seal(message(long_id[:-1], T, HONEST)), T + 1)[0] == "ok"
    assert len(dedup.to_bytes(T + 1)) < 1_000


def test_the_floor_refuses_older_frames_from_everyone(ciphers):
    """Cause: after an unclean restart the table is empty (issue 8 #2). Fix:
    ``floor``: frames dated before it are "stale" from every sender."""
    dedup = _core.Deduplicator(360.0, 100)
    assert dedup.floor is None
    dedup.floor = T - 60
    rx = receivers(ciphers, dedup)
    assert rx[HONEST].receive(ciphers[HONEST].seal(message("old", T - 60.5, HONEST)), T)[0] == "stale"
    assert "floor" in rx[HONEST].last_error
    assert rx[MALLORY].receive(ciphers[MALLORY].seal(message("ok", T - 59.5, MALLORY)), T)[0] == "ok"
    dedup.floor = None
    assert rx[HONEST].receive(ciphers[HONEST].seal(message("old", T - 60.5, HONEST)), T)[0] == "ok"
    with pytest.raises(ValueError):
        dedup.floor = math.nan


@pytest.mark.parametrize(
    "kwargs",
    [{"per_peer": 0}, {"per_peer": -1}, {"max_peers": 0}, {"max_peers": -5}],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_limit_value_errors(kwargs):
    with pytest.raises(ValueError):
        _core.Deduplicator(60.0, 10, **kwargs)


def test_limits_default_to_max_entries():
    d = _core.Deduplicator(60.0, 10)
    assert (d.max_entries, d.per_peer, d.max_peers, d.partitions, d.forgotten) == (10, 10, 10, 0, 0)
    d = _core.Deduplicator(60.0, 10, per_peer=3, max_peers=4)
    assert (d.per_peer, d.max_peers) == (3, 4)


# ---------------------------------------------------------------------------
# The saved form (what smsgnet.replay writes)


def test_to_bytes_from_bytes_keeps_ids_horizons_and_floor(ciphers):
    dedup = _core.Deduplicator(360.0, 100, per_peer=3)
    rx = receivers(ciphers, dedup)
    dedup.mark("mine", T)
    for i in range(5):
        assert rx[HONEST].receive(ciphers[HONEST].seal(message(f"h{i}", T + i, HONEST)), T + 5)[0] == "ok"
    dedup.floor = T - 100
    data = dedup.to_bytes(T + 6)
    back = _core.Deduplicator.from_bytes(data, 360.0, 100, per_peer=3, now=T + 6)
    assert (len(back), back.floor, back.evicted) == (4, T - 100, 2)
    assert back.horizon(HONEST, T + 6) == T + 1
    assert back.contains("h4", T + 6, sender=HONEST) and back.contains("mine", T + 6)
    # what expired by load time is dropped
    assert len(_core.Deduplicator.from_bytes(data, 360.0, 100, now=T + 5 + 360)) == 0
    # smaller limits at load time evict the oldest, raising horizons
    small = _core.Deduplicator.from_bytes(data, 360.0, 100, per_peer=1, now=T + 6)
    assert small.horizon(HONEST, T + 6) == T + 3 and not small.contains("h3", T + 6, sender=HONEST)


def test_damaged_saved_tables_are_value_errors():
    dedup = _core.Deduplicator(360.0, 100)
    dedup.check_and_mark("a", T, sender=HONEST)
    data = dedup.to_bytes(T)
    for bad in (b"", data[:20], data[:-1], data + b"\0", b"X" + data[1:], data[:40] + bytes([data[40] ^ 1]) + data[41:]):
        with pytest.raises(ValueError, match="replay table"):
            _core.Deduplicator.from_bytes(bad, 360.0, 100, now=T)
    with pytest.raises(TypeError):
        _core.Deduplicator.from_bytes("text", 360.0, 100)  # type: ignore[arg-type]
