"""Replay protection that survives restarts, graceful or not (issue 8 #2).

The replay table (``_core.Deduplicator``, theory of operation in ``rust/dedup.rs``)
lives in memory. Without more, a frame recorded before a restart is accepted
again after it. :class:`ReplayGuard` closes that:

* **Graceful stop** (:meth:`ReplayGuard.stop`): the table is saved to
  ``<state_dir>/replay.state`` (atomic: temp file, fsync, rename, fsync of the
  directory), then the marker ``<state_dir>/replay.marker`` says ``stopped``.
  The next :meth:`~ReplayGuard.start` loads it: every ID still inside its replay
  window, and every horizon, is back; a recorded frame is a ``duplicate``.
* **Unclean exit** (``kill -9``, crash, power loss): the marker still says
  ``running``. The next start loads the last checkpoint if there is one (IDs
  received before it stay refused) and sets the table's *floor* to
  ``start time - replay_skew_allowance``: every frame dated before it is
  ``stale``, from every peer.
* **No saved state** (first start, ``state_dir=None``, a corrupt or truncated
  file): as an unclean exit. A damaged file is logged (WARNING, logger
  ``smsgnet.replay``) and never stops the node.

The rule and its limits:

* A peer whose clock is at most ``replay_skew_allowance`` behind loses nothing
  after an unclean restart; a peer further behind has its frames dropped as
  ``stale`` until ``now - lag`` passes the floor, i.e. for at most
  ``lag - allowance`` seconds after the start. The floor stops mattering
  ``dedup_ttl`` seconds after it (older frames are stale by age anyway).
* After an unclean exit, a frame received after the last checkpoint and dated
  at or after the floor could be replayed once. Frames are dated at most
  ``max_clock_skew`` ahead of their arrival, so none is left when the node
  restarts more than ``replay_skew_allowance + max_clock_skew`` seconds after
  the crash (or when the checkpoint was taken after the frame arrived). A
  larger allowance keeps more skewed peers and widens that gap; checkpoints
  narrow it.
* The table stores UNIX times: a clock stepped back across a restart by more
  than the allowance reopens a window of that size.

What the transport calls (``transport.py`` is not edited here; this is the
contract for it). Config fields to add to ``TransportConfig`` (names and
defaults; :meth:`ReplayGuard.from_config` reads them with these defaults, so
it works before they exist)::

    #: Directory for the replay state (replay.state, replay.marker, replay.lock);
    #: None: nothing is saved, every start sets the floor.
    state_dir: str | None = None
    #: After an unclean exit (or without saved state) frames dated more than this
    #: before the start are refused; peers whose clocks lag less lose nothing.
    replay_skew_allowance: float = 60.0
    #: Save the replay table this often while running (None: only at stop).
    replay_checkpoint_interval: float | None = 60.0
    #: At most this many IDs per peer in the replay table (None: dedup_max_entries).
    dedup_max_entries_per_peer: int | None = None
    #: At most this many peers in the replay table (None: dedup_max_entries).
    dedup_max_peers: int | None = None

and the calls, in order::

    # Transport.__init__
    self._replay = ReplayGuard.from_config(config)
    # Transport.start(), before the server accepts or anything dials;
    # replaces make_deduplicator(config)
    self._dedup = self._replay.start()
    # one receiver per authenticated peer, every connection of it with the same sender
    _core.FrameReceiver(cipher, self._dedup, bucket=bucket,
                        max_age=config.dedup_ttl, max_future=config.max_clock_skew,
                        peer_id=peer_id if config.strict_sender else None,
                        sender=peer_id, local_id=local_node_id)
    # every message sent (unchanged)
    self._dedup.mark(message_id)
    # a task every config.replay_checkpoint_interval seconds (when not None and
    # state_dir is set), beside the sweep every dedup_sweep_interval:
    data = self._replay.snapshot()          # on the event loop: Rust, no I/O
    await loop.run_in_executor(None, self._replay.write_checkpoint, data)
    # Transport.stop(), once every connection is closed (no frame can arrive any more)
    data = self._replay.snapshot()
    await loop.run_in_executor(None, self._replay.stop, data)

``ReplayGuard.start_kind`` (``"clean"``, ``"unclean"``, ``"corrupt"``,
``"fresh"``, ``"memory"``) and ``ReplayGuard.floor`` are worth a line in
``Transport.stats()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

from smsgnet import _core
from smsgnet.exceptions import ReplayStateError

__all__ = [
    "ReplayGuard",
    "ReplayStateError",
    "StartKind",
    "save_table",
    "load_table",
    "write_atomic",
    "max_state_bytes",
    "STATE_FILE",
    "MARKER_FILE",
    "LOCK_FILE",
]

log = logging.getLogger("smsgnet.replay")

STATE_FILE = "replay.state"
MARKER_FILE = "replay.marker"
LOCK_FILE = "replay.lock"

#: How the last run ended, as far as :meth:`ReplayGuard.start` could tell.
StartKind = Literal["clean", "unclean", "corrupt", "fresh", "memory"]


def max_state_bytes(max_entries: int, per_peer: int | None = None, max_peers: int | None = None) -> int:
    """Bound on the file a table with these limits writes (an ID takes at most 91
    bytes, a sender 91), with room to spare; :func:`load_table` reads no more."""
    per_peer = max_entries if per_peer is None else per_peer
    max_peers = max_entries if max_peers is None else max_peers
    return 4096 + 160 * (max_entries + per_peer) + 120 * (max_peers + 1)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one.

    Temp file in the same directory (mode 0600), fsync, rename over ``path``,
    fsync of the directory. Raises ``OSError``; the temp file is removed then.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_table(dedup: _core.Deduplicator, path: str | os.PathLike[str], now: float | None = None) -> int:
    """Save a replay table atomically (:func:`write_atomic`); returns the bytes written."""
    data = dedup.to_bytes(time.time() if now is None else now)
    write_atomic(path, data)
    return len(data)


def load_table(
    path: str | os.PathLike[str],
    *,
    ttl: float,
    max_entries: int,
    per_peer: int | None = None,
    max_peers: int | None = None,
    now: float | None = None,
) -> _core.Deduplicator:
    """Load a table saved by :func:`save_table`, rebuilt under these limits.

    Raises ``FileNotFoundError`` (and other ``OSError``) when it cannot be read
    and :class:`ReplayStateError` when it is larger than these limits allow,
    truncated or corrupt; the caller logs it and starts without it.
    """
    limit = max_state_bytes(max_entries, per_peer, max_peers)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ReplayStateError(f"{path}: larger than the {limit} bytes these limits allow")
    try:
        return _core.Deduplicator.from_bytes(
            data, ttl, max_entries, per_peer=per_peer, max_peers=max_peers,
            now=time.time() if now is None else now,
        )
    except ValueError as e:
        raise ReplayStateError(f"{path}: {e}") from None


class ReplayGuard:
    """The replay table of one node, and its state across restarts.

    ``state_dir=None`` keeps everything in memory: nothing is saved and every
    :meth:`start` sets the floor. Times are UNIX seconds (``time.time()`` by
    default; pass ``now`` in tests). Not thread-safe: call it from one thread,
    except :meth:`write_checkpoint`, which only writes bytes it is given.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None,
        *,
        ttl: float,
        max_entries: int,
        per_peer: int | None = None,
        max_peers: int | None = None,
        skew_allowance: float = 60.0,
    ) -> None:
        if not (isinstance(skew_allowance, (int, float)) and 0 <= skew_allowance < float("inf")):
            raise ValueError(f"skew_allowance must be a finite number >= 0, got {skew_allowance!r}")
        _core.Deduplicator(ttl, max_entries, per_peer=per_peer, max_peers=max_peers)  # checks the limits
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.ttl = ttl
        self.max_entries = max_entries
        self.per_peer = per_peer
        self.max_peers = max_peers
        self.skew_allowance = float(skew_allowance)
        self.start_kind: StartKind | None = None
        #: Why the saved table was not used at start ("" when it was, or there was none).
        self.load_error = ""
        self._dedup: _core.Deduplicator | None = None
        self._lock_fd: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> ReplayGuard:
        """A guard for a ``TransportConfig`` (fields listed in this module's docstring)."""
        state_dir = getattr(config, "state_dir", None)
        return cls(
            state_dir,
            ttl=config.dedup_ttl + config.max_clock_skew,
            max_entries=config.dedup_max_entries,
            per_peer=getattr(config, "dedup_max_entries_per_peer", None),
            max_peers=getattr(config, "dedup_max_peers", None),
            skew_allowance=getattr(config, "replay_skew_allowance", 60.0),
        )

    # -- paths --------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        assert self.state_dir is not None
        return self.state_dir / name

    @property
    def dedup(self) -> _core.Deduplicator:
        """The table (after :meth:`start`)."""
        if self._dedup is None:
            raise RuntimeError("ReplayGuard.start() has not been called")
        return self._dedup

    @property
    def floor(self) -> float | None:
        """Frames dated before this are refused (None: no floor)."""
        return None if self._dedup is None else self._dedup.floor

    # -- lifecycle ----------------------------------------------------------------

    def start(self, now: float | None = None) -> _core.Deduplicator:
        """Restore or create the table; returns it. Call before any frame is received.

        Loads the saved table after a clean stop; otherwise loads the last
        checkpoint if usable and sets the floor to ``now - skew_allowance``.
        Then marks the state directory as running. Raises ``OSError`` when the
        directory cannot be created or written and :class:`ReplayStateError`
        when another running node holds it; a damaged table only sets the floor.
        """
        if self._dedup is not None:
            raise RuntimeError("ReplayGuard.start() was already called")
        now = time.time() if now is None else now
        if self.state_dir is None:
            dedup = self._fresh()
            kind: StartKind = "memory"
        else:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock()
            marker = self._read_marker()
            state = self._path(STATE_FILE)
            loaded = self._load(state, now) if state.exists() else None
            if marker.get("state") == "stopped":
                kind = "clean" if loaded is not None else "corrupt"
            elif marker.get("state") == "running" or state.exists():
                kind = "unclean"
            else:
                kind = "fresh"
            dedup = loaded if loaded is not None else self._fresh()
        if kind != "clean":
            floor = now - self.skew_allowance
            dedup.floor = floor if dedup.floor is None else max(dedup.floor, floor)
        if kind in ("unclean", "corrupt"):
            log.warning(
                "replay state: the last run did not stop cleanly (%s)%s; refusing frames dated before %.3f",
                kind, f": {self.load_error}" if self.load_error else "", dedup.floor,
            )
        if self.state_dir is not None:
            try:
                self._write_marker("running", now)
            except BaseException:
                self._unlock()
                raise
        self._dedup = dedup
        self.start_kind = kind
        return dedup

    def snapshot(self, now: float | None = None) -> bytes:
        """The table's saved form (no I/O; call it where the table is used)."""
        return self.dedup.to_bytes(time.time() if now is None else now)

    def write_checkpoint(self, data: bytes) -> None:
        """Save a :meth:`snapshot` while running (blocking I/O: run it in an executor).

        After an unclean exit the next start loads it, so IDs received before it
        stay refused whatever their ``ts``. Does nothing without a state directory.
        """
        if self.state_dir is not None and self._dedup is not None:
            write_atomic(self._path(STATE_FILE), data)

    def checkpoint(self, now: float | None = None) -> None:
        """:meth:`snapshot` and :meth:`write_checkpoint` in one blocking call."""
        self.write_checkpoint(self.snapshot(now))

    def stop(self, data: bytes | None = None, now: float | None = None) -> None:
        """Save the table (``data`` from :meth:`snapshot`, or taken now) and mark a clean stop.

        Call it once no frame can be received any more. Blocking I/O. Does
        nothing when not started, the second time, or without a state directory
        (beyond forgetting the table). Raises ``OSError`` when the state cannot
        be written; the marker then still says running, so the next start sets
        the floor.
        """
        if self._dedup is None:
            return
        now = time.time() if now is None else now
        try:
            if self.state_dir is not None:
                write_atomic(self._path(STATE_FILE), self.snapshot(now) if data is None else data)
                self._write_marker("stopped", now)
        finally:
            self._unlock()
            self._dedup = None

    # -- internals ----------------------------------------------------------------

    def _fresh(self) -> _core.Deduplicator:
        return _core.Deduplicator(self.ttl, self.max_entries, per_peer=self.per_peer, max_peers=self.max_peers)

    def _load(self, path: Path, now: float) -> _core.Deduplicator | None:
        try:
            return load_table(
                path, ttl=self.ttl, max_entries=self.max_entries, per_peer=self.per_peer,
                max_peers=self.max_peers, now=now,
            )
        except (OSError, ReplayStateError) as e:
            self.load_error = str(e)
            return None

    def _read_marker(self) -> dict[str, Any]:
        try:
            with open(self._path(MARKER_FILE), "rb") as f:
                marker = json.loads(f.read(4096))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self.load_error = f"unreadable marker: {e}"
            return {"state": "running"}  # unknown: assume the worst
        return marker if isinstance(marker, dict) else {"state": "running"}

    def _write_marker(self, state: str, now: float) -> None:
        body = {"state": state, "pid": os.getpid(), "at": now}
        write_atomic(self._path(MARKER_FILE), json.dumps(body).encode())

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        fd = os.open(self._path(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ReplayStateError(f"{self.state_dir} is in use by another running node") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
