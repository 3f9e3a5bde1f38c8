"""ReplayGuard: no replay across a restart, graceful or not (issue 8 #2), no sockets.

Each test names the cause and the fix. Real frames and crypto; the clock is
passed in. The unclean exit is a real ``kill -9`` of a child process.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from smsgnet import TransportConfig, _core
from smsgnet.replay import (
    LOCK_FILE,
    MARKER_FILE,
    STATE_FILE,
    ReplayGuard,
    ReplayStateError,
    load_table,
    max_state_bytes,
    save_table,
    write_atomic,
)

T = 1735689600.0  # 2025-01-01T00:00:00Z
PEER = "300c9c9603b92a4b39ed3958bf924011"
SECRET = bytes(range(32))
LIMITS = {"ttl": 360.0, "max_entries": 1000}


def ts_text(unix: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(unix, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def frame(mid: str, ts: float) -> bytes:
    msg = {"id": mid, "type": "ping", "from": PEER, "to": "", "ts": ts_text(ts), "payload": None}
    return _core.SmsgCipher(SECRET).seal(orjson.dumps(msg))


def receiver(dedup: _core.Deduplicator) -> _core.FrameReceiver:
    return _core.FrameReceiver(_core.SmsgCipher(SECRET), dedup, max_age=300.0, max_future=60.0, sender=PEER)


def guard(tmp_path: Path, **kw) -> ReplayGuard:
    return ReplayGuard(tmp_path / "state", **{**LIMITS, "skew_allowance": 60.0, **kw})


# ---------------------------------------------------------------------------
# Graceful restart


def test_a_frame_recorded_before_a_graceful_restart_is_dropped_after_it(tmp_path):
    """Cause: the replay table lived in memory only; a frame recorded before
    ``stop()`` was accepted again after the next ``start()``. Fix: ``stop``
    saves the table and marks a clean stop; ``start`` loads it."""
    recorded = frame("m1", T)
    g1 = guard(tmp_path)
    assert receiver(g1.start(now=T - 1000)).receive(recorded, T)[0] == "ok"
    g1.stop(now=T + 1)
    marker = json.loads((tmp_path / "state" / MARKER_FILE).read_text())
    assert marker["state"] == "stopped"

    g2 = guard(tmp_path)
    dedup = g2.start(now=T + 10)
    assert g2.start_kind == "clean" and g2.load_error == ""
    assert dedup.floor == T - 1060  # only the first start's, long past: a clean stop sets none
    rx = receiver(dedup)
    assert rx.receive(recorded, T + 10)[0] == "duplicate"
    # frames of peers whose clocks lag a lot still pass after a clean restart
    assert rx.receive(frame("m2", T - 200), T + 10)[0] == "ok"
    g2.stop(now=T + 11)


def test_horizons_survive_a_graceful_restart(tmp_path):
    """Cause: an ID evicted before the stop would be forgotten by a fresh
    table. Fix: horizons are saved with the IDs."""
    g1 = ReplayGuard(tmp_path, ttl=360.0, max_entries=1000, per_peer=1)
    rx = receiver(g1.start(now=T - 1000))
    old = frame("m1", T)
    assert rx.receive(old, T)[0] == "ok"
    assert rx.receive(frame("m2", T + 1), T + 1)[0] == "ok"  # evicts m1
    g1.stop(now=T + 2)
    g2 = ReplayGuard(tmp_path, ttl=360.0, max_entries=1000, per_peer=1)
    assert receiver(g2.start(now=T + 3)).receive(old, T + 3)[0] == "stale"
    g2.stop(now=T + 4)


# ---------------------------------------------------------------------------
# Unclean exit: a real kill -9

CHILD = textwrap.dedent(
    """
    import sys, time
    from smsgnet import _core
    from smsgnet.replay import ReplayGuard
    state, t, frames = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    g = ReplayGuard(state, ttl=360.0, max_entries=1000, skew_allowance=60.0)
    dedup = g.start(now=t - 1000)  # its own first start: the floor it sets is long past
    rx = _core.FrameReceiver(_core.SmsgCipher(bytes(range(32))), dedup, sender="{peer}")
    checkpoint_after = frames.index("checkpoint")
    for i, hexframe in enumerate(frames):
        if hexframe == "checkpoint":
            g.checkpoint(now=t)
            continue
        assert rx.receive(bytes.fromhex(hexframe), t)[0] == "ok"
    print("ready", flush=True)
    time.sleep(60)
    """
).replace("{peer}", PEER)


def run_and_kill(state: Path, t: float, *frames_or_checkpoint: bytes | str) -> None:
    args = [f.hex() if isinstance(f, bytes) else f for f in frames_or_checkpoint]
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state), repr(t), *args], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_after_kill_9_old_frames_drop_by_the_floor_and_frames_within_the_allowance_pass(tmp_path, caplog):
    """Cause: after ``kill -9`` nothing was saved, so every recorded frame was
    accepted again. Fix: the marker still says "running"; the next start sets a
    floor at start - skew_allowance: older frames are "stale" from everyone,
    frames of peers lagging less than the allowance pass."""
    state = tmp_path / "state"
    before_checkpoint = frame("before", T + 10)  # after the coming floor: only its saved ID stops it
    after_checkpoint = frame("after", T - 100)
    run_and_kill(state, T, before_checkpoint, "checkpoint", after_checkpoint)
    assert json.loads((state / MARKER_FILE).read_text())["state"] == "running"

    start = T + 20
    g = ReplayGuard(state, ttl=360.0, max_entries=1000, skew_allowance=60.0)
    with caplog.at_level(logging.WARNING, logger="smsgnet.replay"):
        dedup = g.start(now=start)
    assert g.start_kind == "unclean"
    assert dedup.floor == start - 60.0
    assert "did not stop cleanly" in caplog.text
    rx = receiver(dedup)
    # recorded before the crash and replayed: refused (by ID or by the floor)
    assert rx.receive(before_checkpoint, start)[0] == "duplicate"  # in the checkpoint
    assert dedup.contains("before", start, sender=PEER) and not dedup.contains("after", start)
    assert rx.receive(after_checkpoint, start)[0] == "stale"  # not saved: the floor
    assert "floor" in rx.last_error
    # an honest peer whose clock is 59 s behind loses nothing
    assert rx.receive(frame("lagging", start - 59), start)[0] == "ok"
    # one 61 s behind is refused until its clock passes the floor
    assert rx.receive(frame("too-far", start - 61), start)[0] == "stale"
    assert rx.receive(frame("later", start + 2 - 61), start + 2)[0] == "ok"
    g.stop(now=start + 3)


def test_a_frame_inside_the_allowance_recorded_after_the_last_checkpoint_is_the_documented_gap(tmp_path):
    """Not a bug, the documented limit: after an unclean exit, a frame received
    after the last checkpoint and dated at or after the floor can be replayed
    once. Restarting later than allowance + max_clock_skew after the crash
    closes it. This test pins the rule so that a change to it is deliberate."""
    state = tmp_path / "state"
    recent = frame("recent", T)
    run_and_kill(state, T, "checkpoint", recent)
    quick = ReplayGuard(state, ttl=360.0, max_entries=1000, skew_allowance=60.0)
    assert receiver(quick.start(now=T + 30)).receive(recent, T + 30)[0] == "ok"  # the gap
    quick.stop(now=T + 31)
    (state / MARKER_FILE).write_text(json.dumps({"state": "running"}))  # as if it crashed again
    late = ReplayGuard(state, ttl=360.0, max_entries=1000, skew_allowance=60.0)
    assert receiver(late.start(now=T + 121)).receive(frame("recent-2", T), T + 121)[0] == "stale"
    late.stop(now=T + 122)


# ---------------------------------------------------------------------------
# Damaged or missing state


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),
        lambda data: b"",
        lambda data: b"not a table at all" * 10,
    ],
    ids=["truncated", "bit_flip", "empty", "garbage"],
)
def test_a_damaged_table_after_a_clean_stop_is_logged_and_the_floor_is_set(tmp_path, caplog, damage):
    """Cause: a truncated or corrupt state file must neither crash the node nor
    be half-used. Fix: the SHA-256 check refuses it whole; start logs it and
    falls back to the floor."""
    g1 = guard(tmp_path)
    recorded = frame("m1", T)
    assert receiver(g1.start(now=T - 1000)).receive(recorded, T)[0] == "ok"
    g1.stop(now=T + 1)
    path = tmp_path / "state" / STATE_FILE
    path.write_bytes(damage(path.read_bytes()))
    g2 = guard(tmp_path)
    with caplog.at_level(logging.WARNING, logger="smsgnet.replay"):
        dedup = g2.start(now=T + 200)  # the recorded frame is still inside its 300 s window
    assert g2.start_kind == "corrupt"
    assert g2.load_error and "corrupt" in caplog.text
    assert dedup.floor == T + 140
    assert receiver(dedup).receive(recorded, T + 200)[0] == "stale"
    g2.stop(now=T + 201)


def test_a_missing_table_after_a_clean_marker_is_corrupt(tmp_path):
    g1 = guard(tmp_path)
    g1.start(now=T)
    g1.stop(now=T + 1)
    (tmp_path / "state" / STATE_FILE).unlink()
    g2 = guard(tmp_path)
    assert g2.start(now=T + 2).floor == T + 2 - 60
    assert g2.start_kind == "corrupt"
    g2.stop(now=T + 3)


def test_first_start_and_memory_only_set_the_floor(tmp_path):
    """Cause: with no saved state (first start, or no state directory) a
    recorded frame from an earlier life of the node is indistinguishable from
    a fresh one. Fix: every start without a clean table sets the floor."""
    g = guard(tmp_path)
    assert g.start(now=T).floor == T - 60 and g.start_kind == "fresh"
    g.stop(now=T + 1)
    m = ReplayGuard(None, **LIMITS)
    dedup = m.start(now=T)
    assert (m.start_kind, dedup.floor) == ("memory", T - 60)
    m.checkpoint(now=T)  # nothing to write to: no error
    m.stop(now=T + 1)


def test_a_garbage_marker_is_treated_as_unclean(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / MARKER_FILE).write_bytes(b"\xff\xfe not json")
    g = guard(tmp_path)
    assert g.start(now=T).floor == T - 60
    assert g.start_kind == "unclean" and "marker" in g.load_error
    g.stop(now=T + 1)


def test_the_floor_persists_through_a_quick_clean_restart(tmp_path):
    """Cause: an unclean start followed by a clean stop within dedup_ttl would
    drop the floor, reopening the gap it closes. Fix: the floor is saved in the
    table and kept at load."""
    state = tmp_path / "state"
    state.mkdir()
    (state / MARKER_FILE).write_text(json.dumps({"state": "running"}))
    g1 = guard(tmp_path)
    g1.start(now=T)
    g1.stop(now=T + 1)
    g2 = guard(tmp_path)
    assert g2.start(now=T + 2).floor == T - 60
    assert g2.start_kind == "clean"
    g2.stop(now=T + 3)


# ---------------------------------------------------------------------------
# The files


def test_one_state_directory_one_running_node(tmp_path):
    """Cause: two nodes sharing a state directory would overwrite each other's
    table. Fix: an exclusive lock while running; a second start is refused."""
    g1 = guard(tmp_path)
    g1.start(now=T)
    with pytest.raises(ReplayStateError, match="in use"):
        guard(tmp_path).start(now=T)
    g1.stop(now=T + 1)
    g3 = guard(tmp_path)
    g3.start(now=T + 2)  # free again after a stop
    g3.stop(now=T + 3)
    assert (tmp_path / "state" / LOCK_FILE).exists()


def test_files_are_private_and_no_temp_file_is_left(tmp_path):
    g = guard(tmp_path)
    g.start(now=T)
    g.checkpoint(now=T)
    g.stop(now=T + 1)
    state = tmp_path / "state"
    assert sorted(p.name for p in state.iterdir()) == sorted([STATE_FILE, MARKER_FILE, LOCK_FILE])
    assert state.stat().st_mode & 0o777 == 0o700
    for name in (STATE_FILE, MARKER_FILE):
        assert (state / name).stat().st_mode & 0o777 == 0o600


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "f"
    write_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_load_table_is_bounded_by_the_limits(tmp_path):
    dedup = _core.Deduplicator(360.0, 10)
    for i in range(10):
        dedup.check_and_mark(f"id-{i}", T, sender=PEER)
    path = tmp_path / "t"
    assert save_table(dedup, path, now=T) == path.stat().st_size
    assert len(load_table(path, ttl=360.0, max_entries=10, now=T)) == 10
    path.write_bytes(path.read_bytes() + b"\0" * max_state_bytes(10))
    with pytest.raises(ReplayStateError, match="larger than"):
        load_table(path, ttl=360.0, max_entries=10, now=T)
    with pytest.raises(FileNotFoundError):
        load_table(tmp_path / "missing", ttl=360.0, max_entries=10)


def test_a_full_table_fits_the_bound():
    dedup = _core.Deduplicator(360.0, 2000, per_peer=1000, max_peers=500)
    for i in range(3000):
        dedup.check_and_mark("x" * 100 + str(i), T, sender=f"{i % 700:064x}")
    for i in range(1000):
        dedup.mark("y" * 100 + str(i), T)
    assert len(dedup.to_bytes(T)) <= max_state_bytes(2000, 1000, 500)


def test_from_config_and_lifecycle_misuse(tmp_path):
    config = TransportConfig()
    g = ReplayGuard.from_config(config)
    assert (g.state_dir, g.ttl, g.max_entries, g.skew_allowance) == (None, 360.0, 200_000, 60.0)
    with pytest.raises(RuntimeError):
        g.dedup  # noqa: B018
    g.stop()  # not started: nothing to do
    g.start(now=T)
    with pytest.raises(RuntimeError):
        g.start(now=T)
    g.stop(now=T)
    g.stop(now=T)  # twice: nothing to do
    with pytest.raises(ValueError):
        ReplayGuard(tmp_path, ttl=360.0, max_entries=10, skew_allowance=-1)
    with pytest.raises(ValueError):
        ReplayGuard(tmp_path, ttl=0.0, max_entries=10)


def test_an_unusable_state_directory_is_an_os_error_at_start(tmp_path):
    (tmp_path / "a-file").write_text("")
    g = ReplayGuard(tmp_path / "a-file" / "state", **LIMITS)
    with pytest.raises(OSError):
        g.start(now=T)
    with pytest.raises(RuntimeError):
        g.dedup  # noqa: B018
