"""Known peers, who may connect, and (optionally) a JSON file that keeps them.

Auth modes
----------

* ``open`` — any peer that completes the handshake may connect.
* ``allowlist`` — the seed's rule: a peer may connect when its public key was
  allowed (:meth:`PeerRegistry.allow_key`), or when it is registered with the
  same public key. "Registered" means registered *on purpose*; see below.

How a peer got in (``Peer.origin``)
-----------------------------------

* ``"added"`` (:attr:`PeerOrigin.ADDED`): registered on purpose with
  :meth:`PeerRegistry.add`. Admitted in allowlist mode; never evicted.
* ``"auto"`` (:attr:`PeerOrigin.AUTO`): registered by
  :meth:`PeerRegistry.mark_connected` because it connected and proved its key
  (in open mode, anyone with a throwaway key). **Not** admitted in allowlist
  mode unless its key is allowed explicitly, so switching a registry that was
  open to allowlist mode does not let in every key that ever connected.

The origin is saved with each peer. Files written before origins existed are
still read: their peers count as ``"added"`` when the file was saved in
allowlist mode (the old code registered peers there only on purpose, or
because their key was allowed) and as ``"auto"`` otherwise (open mode, or no
mode saved). Such a file keeps working unchanged in allowlist mode; an old
open-mode file reused with ``--allowlist`` admits only the allowed keys.

Bounds
------

* At most ``max_peers`` peers (default 10 000). When
  :meth:`~PeerRegistry.mark_connected` registers one more, the least recently
  seen ``"auto"`` peer whose key is not allowed is evicted (peers not
  connected first). ``"added"`` peers and peers with an allowed key are never
  evicted, so :meth:`~PeerRegistry.add` may go past the bound; only
  auto-registered peers, which anyone can create, are held to it. The file is
  trimmed the same way when loaded.
* Identity fields are kept to :data:`smsgnet.identity.IDENTITY_LIMITS` (the
  handshake already refuses longer ones), so a peer costs at most about 1 KiB
  in memory and in the file.

Saving
------

The file is rewritten atomically (temporary file, fsync, rename), so a crash
mid-write leaves the previous version, and written one peer per line.

* :meth:`~PeerRegistry.add`, :meth:`~PeerRegistry.remove`,
  :meth:`~PeerRegistry.allow_key` and :meth:`~PeerRegistry.revoke_key` are
  administrative: they write at once, in the caller's thread, and raise
  :class:`RegistryError` when the file cannot be written.
* The transport callbacks never write and never raise.
  :meth:`~PeerRegistry.mark_connected` asks for a save with
  :meth:`~PeerRegistry.save_soon` when something the file keeps changed (a
  new peer, a new name, role or address); a background thread then writes the
  file, at most once every ``save_interval`` seconds (default 2), so the
  event loop never waits for the disk. A failed write is logged (rate-limited)
  and retried with a growing delay (up to a minute) until it succeeds.
  :meth:`~PeerRegistry.mark_disconnected` and
  :meth:`~PeerRegistry.record_ping` change only times, which reach the file
  with the next write.
* At stop, ``await registry.flush()`` (a worker thread) or
  ``registry.save()`` (the caller's thread) writes what is pending, times
  included. A change made less than ``save_interval`` before an unclean exit
  may be lost; a peer lost that way is registered again when it reconnects.

The transport adds a peer that connected to us only after it has proven it
holds its key (its first authenticated frame), never on the unauthenticated
half of the handshake.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from smsgnet.exceptions import ConfigError, RegistryError
from smsgnet.identity import IDENTITY_LIMITS, NodeIdentity, _write_atomic
from smsgnet.logsafe import WarningLimiter, clip

__all__ = ["AuthMode", "PeerOrigin", "Peer", "PeerRegistry", "DEFAULT_MAX_PEERS", "DEFAULT_SAVE_INTERVAL"]

log = logging.getLogger(__name__)

#: Peers a registry keeps by default (see "Bounds" above).
DEFAULT_MAX_PEERS = 10_000
#: Seconds between two background writes of the file, by default.
DEFAULT_SAVE_INTERVAL = 2.0
#: Longest wait before retrying a failed background write.
MAX_RETRY_INTERVAL = 60.0


class AuthMode(StrEnum):
    """Who may connect: anyone (``open``) or only known keys (``allowlist``)."""

    OPEN = "open"
    ALLOWLIST = "allowlist"


class PeerOrigin(StrEnum):
    """How a peer got into the registry: on purpose (``added``) or by connecting (``auto``)."""

    ADDED = "added"
    AUTO = "auto"


@dataclass(slots=True)
class Peer:
    """A node we know. ``address`` is ``HOST:PORT`` or a ``ws(s)://`` URL.

    ``origin`` says how it got into the registry (:class:`PeerOrigin`);
    :meth:`PeerRegistry.add` sets it to ``"added"``,
    :meth:`PeerRegistry.mark_connected` to ``"auto"`` for a peer it registers.
    """

    id: str = ""
    name: str = ""
    public_key: str = ""
    address: str = ""
    role: str = ""
    added_at: float = field(default_factory=time.time)
    last_seen: float | None = None
    ping_ms: float | None = None
    score: float = 50.0
    connected: bool = False
    origin: str = PeerOrigin.ADDED.value
    #: "2.0" once the peer was seen on protocol 2.0: from then on 1.0 links
    #: from or to it are refused (downgrade protection) until
    #: :meth:`PeerRegistry.forget_protocol`. "" otherwise.
    protocol: str = ""

    @classmethod
    def from_identity(cls, identity: NodeIdentity, address: str = "") -> Peer:
        """A peer record for a verified identity (fields cut to the identity limits)."""
        return cls(
            id=identity.id[: IDENTITY_LIMITS["id"]],
            name=identity.name[: IDENTITY_LIMITS["name"]],
            public_key=identity.public_key[: IDENTITY_LIMITS["publicKey"]],
            address=address,
            role=identity.role[: IDENTITY_LIMITS["role"]],
        )

    @classmethod
    def at(cls, address: str, public_key: str = "") -> Peer:
        """A peer known only by address (and optionally the key it must present)."""
        return cls(address=address, public_key=public_key)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Peer:
        """Build from :meth:`to_dict` output; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


_STR_FIELDS = ("id", "name", "public_key", "address", "role", "origin", "protocol")
_KEPT = {"id": IDENTITY_LIMITS["id"], "public_key": IDENTITY_LIMITS["publicKey"]}
_CUT = {"name": IDENTITY_LIMITS["name"], "role": IDENTITY_LIMITS["role"]}


#: Peers serialised per orjson call while writing: the writer thread holds the
#: GIL for one chunk at a time (well under a millisecond) and then yields.
_CHUNK = 256


def _row(p: Peer) -> dict[str, Any]:
    """One peer as the file keeps it (``connected`` is never saved as true)."""
    return {
        "id": p.id, "name": p.name, "public_key": p.public_key, "address": p.address, "role": p.role,
        "added_at": p.added_at, "last_seen": p.last_seen, "ping_ms": p.ping_ms, "score": p.score,
        "connected": False, "origin": p.origin, "protocol": p.protocol,
    }


def _peer_from_entry(entry: Any, legacy_origin: str) -> Peer | None:
    """A peer from one file entry; None to skip it. Raises TypeError on a bad shape."""
    if not isinstance(entry, dict):
        raise TypeError(f"bad peer entry {clip(repr(entry), 80)}")
    for key in _STR_FIELDS:
        if key in entry and not isinstance(entry[key], str):
            raise TypeError(f"peer field {key} is not a string")
    for key in ("added_at", "score"):
        if key in entry and not isinstance(entry[key], int | float):
            raise TypeError(f"peer field {key} is not a number")
    for key in ("last_seen", "ping_ms"):
        if entry.get(key) is not None and not isinstance(entry[key], int | float):
            raise TypeError(f"peer field {key} is not a number")
    if not entry.get("id") or any(len(entry.get(k, "")) > n for k, n in _KEPT.items()):
        return None  # no ID, or an ID/key no node can have
    origin = entry.get("origin")
    if origin is None:
        origin = legacy_origin
    elif origin not in (PeerOrigin.ADDED, PeerOrigin.AUTO):
        origin = PeerOrigin.AUTO.value
    protocol = entry.get("protocol", "")
    peer = Peer.from_dict({**entry, "origin": str(origin), "connected": False,
                           "protocol": protocol if protocol == "2.0" else ""})
    for key, n in _CUT.items():
        value = getattr(peer, key)
        if len(value) > n:
            setattr(peer, key, value[:n])
    return peer


def _seen(p: Peer) -> float:
    return p.last_seen if p.last_seen is not None else p.added_at


class PeerRegistry:
    """Registry of known peers, for use from one asyncio loop (or one thread).

    ``path`` turns on persistence: the file is loaded now (if it exists) and
    kept up to date as the module docstring describes. ``auth_mode``
    defaults to the mode saved in the file, else ``open``. ``max_peers``
    bounds the auto-registered peers, ``save_interval`` the rate of
    background writes (seconds). Raises :class:`RegistryError` for an
    unknown ``auth_mode`` or a file that cannot be read, :class:`ConfigError`
    for ``max_peers < 1`` or a negative ``save_interval``.

    Iteration and :meth:`peers` list the least recently seen peer first.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, auth_mode: str | None = None, *,
                 max_peers: int = DEFAULT_MAX_PEERS, save_interval: float = DEFAULT_SAVE_INTERVAL) -> None:
        if isinstance(max_peers, bool) or not isinstance(max_peers, int) or max_peers < 1:
            raise ConfigError(f"max_peers must be an integer of at least 1, got {max_peers!r}")
        if not isinstance(save_interval, int | float) or not 0 <= save_interval < float("inf"):
            raise ConfigError(f"save_interval must be a finite number of seconds >= 0, got {save_interval!r}")
        self.path = Path(path) if path is not None else None
        self.max_peers = max_peers
        self.save_interval = float(save_interval)
        # order is recency: least recently seen first. OrderedDict.move_to_end
        # is one atomic step, so the writer thread's snapshot never misses a peer.
        self._peers: OrderedDict[str, Peer] = OrderedDict()
        self._allowed_keys: set[str] = set()
        # background saving: _cond guards the flags below, _write_lock serialises writes
        self._cond = threading.Condition()
        self._write_lock = threading.RLock()
        self._dirty = False  # something the file keeps changed
        self._times_dirty = False  # only times changed
        self._closed = False
        self._worker: threading.Thread | None = None
        self._next_save_at = 0.0
        self._failures = 0  # consecutive failed background writes
        self.failed_saves = 0  #: background writes that failed, in total
        self._warnings = WarningLimiter(per_minute=6)
        saved_mode = None
        if self.path is not None and self.path.exists():
            saved_mode = self._load()
        mode = auth_mode if auth_mode is not None else (saved_mode or AuthMode.OPEN)
        try:
            self.auth_mode = AuthMode(mode)
        except ValueError:
            raise RegistryError(f"auth_mode must be 'open' or 'allowlist', got {clip(mode, 40)!r}") from None

    # -- peers ---------------------------------------------------------------

    def add(self, peer: Peer) -> Peer:
        """Register a peer on purpose (``origin`` becomes ``"added"``), replacing
        any with its ID, and write the file at once (raises :class:`RegistryError`
        when it cannot be written). Added peers are admitted in allowlist mode
        (with their key) and never evicted."""
        if not peer.id:
            raise RegistryError("a registered peer needs an id")
        peer.origin = PeerOrigin.ADDED.value
        self._peers[peer.id] = peer
        self._peers.move_to_end(peer.id)
        self.save()
        return peer

    def get(self, peer_id: str) -> Peer | None:
        """The peer with this ID, or None."""
        return self._peers.get(peer_id)

    def remove(self, peer_id: str) -> bool:
        """Forget a peer and write the file at once; True when it was known."""
        if self._peers.pop(peer_id, None) is None:
            return False
        self.save()
        return True

    def peers(self) -> list[Peer]:
        """Every known peer, least recently seen first."""
        return list(self._peers.values())

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._peers.values()))

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def find_by_key(self, public_key: str) -> Peer | None:
        """The registered peer with this base64 public key, or None."""
        for p in self._peers.values():
            if p.public_key == public_key:
                return p
        return None

    # -- allowlist -------------------------------------------------------------

    def allow_key(self, public_key: str) -> None:
        """Allow a base64 public key to connect in allowlist mode (written at once)."""
        self._allowed_keys.add(public_key)
        self.save()

    def revoke_key(self, public_key: str) -> None:
        """Remove a key from the allowlist (written at once). A peer added on
        purpose stays registered and admitted; an auto-registered one is no
        longer admitted."""
        self._allowed_keys.discard(public_key)
        self.save()

    @property
    def allowed_keys(self) -> frozenset[str]:
        """Keys allowed to connect in allowlist mode."""
        return frozenset(self._allowed_keys)

    def is_allowed(self, peer_id: str, public_key: str) -> bool:
        """The seed's rule: open mode lets anyone in; allowlist mode lets in a
        key that is allowed, or a peer added on purpose with this key (not one
        that was only auto-registered by connecting)."""
        if self.auth_mode is AuthMode.OPEN:
            return True
        if public_key in self._allowed_keys:
            return True
        known = self._peers.get(peer_id)
        return known is not None and known.public_key == public_key and known.origin == PeerOrigin.ADDED

    # -- transport callbacks (never write, never raise) ----------------------------

    def mark_connected(self, identity: NodeIdentity, address: str = "") -> Peer:
        """Record a peer that has proven its key: add (``origin`` ``"auto"``)
        or update it, connected, most recently seen.

        Never writes and never raises: when something the file keeps changed
        (a new peer, a new name, role or address) it calls :meth:`save_soon`;
        a reconnect that changes nothing only updates times in memory. A new
        peer beyond ``max_peers`` evicts the least recently seen auto peer
        (possibly this one, when every other peer is protected; the returned
        record is then not kept).
        """
        peer = self._peers.get(identity.id)
        changed = False
        if peer is None or peer.public_key != identity.public_key:
            peer = Peer.from_identity(identity, address)
            peer.origin = PeerOrigin.AUTO.value
            changed = True
        else:
            for attr, value in (("name", identity.name[: IDENTITY_LIMITS["name"]]),
                                ("role", identity.role[: IDENTITY_LIMITS["role"]]), ("address", address)):
                if value and getattr(peer, attr) != value:
                    setattr(peer, attr, value)
                    changed = True
        peer.connected = True
        peer.last_seen = time.time()
        self._peers[peer.id] = peer
        self._peers.move_to_end(peer.id)
        if changed:
            self._evict()
            self.save_soon()
        else:
            self._times_dirty = True
        return peer

    def note_protocol(self, peer_id: str, protocol: str) -> None:
        """Remember that a proven peer spoke ``protocol`` (only "2.0" is kept:
        it is what later 1.0 links are refused for). Never raises."""
        peer = self._peers.get(peer_id)
        if protocol == "2.0" and peer is not None and peer.protocol != "2.0":
            peer.protocol = "2.0"
            self.save_soon()

    def requires_protocol_2(self, peer_id: str) -> bool:
        """True when ``peer_id`` was seen on protocol 2.0: a 1.0 link with it
        would be a downgrade and is refused."""
        peer = self._peers.get(peer_id)
        return peer is not None and peer.protocol == "2.0"

    def forget_protocol(self, peer_id: str) -> bool:
        """Allow protocol 1.0 with a peer again (for instance one that now runs
        a Go node with the same key). Returns False when nothing was remembered."""
        peer = self._peers.get(peer_id)
        if peer is None or peer.protocol != "2.0":
            return False
        peer.protocol = ""
        self.save_soon()
        return True

    def mark_disconnected(self, peer_id: str) -> None:
        """Record that a peer's connection closed (in memory; never raises)."""
        peer = self._peers.get(peer_id)
        if peer is not None and peer.connected:
            peer.connected = False
            peer.last_seen = time.time()
            self._touch(peer_id)

    def record_ping(self, peer_id: str, rtt_ms: float) -> None:
        """Record a round trip (in memory; never raises)."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.ping_ms = rtt_ms
            peer.last_seen = time.time()
            self._touch(peer_id)

    def _touch(self, peer_id: str) -> None:
        self._peers.move_to_end(peer_id)
        self._times_dirty = True

    def _evictable(self, p: Peer) -> bool:
        return p.origin != PeerOrigin.ADDED and p.public_key not in self._allowed_keys

    def _evict(self) -> int:
        """Trim auto peers beyond ``max_peers``, least recently seen first,
        those not connected before those connected. Returns how many went."""
        excess = len(self._peers) - self.max_peers
        if excess <= 0:
            return 0
        victims: list[str] = []
        for connected in (False, True):
            for pid, p in self._peers.items():
                if p.connected == connected and self._evictable(p):
                    victims.append(pid)
                    if len(victims) == excess:
                        break
            if len(victims) == excess:
                break
        for pid in victims:
            del self._peers[pid]
        return len(victims)

    # -- persistence ----------------------------------------------------------------

    @property
    def unsaved(self) -> bool:
        """True when the file is behind memory (changes or times not yet written)."""
        with self._cond:
            return self.path is not None and (self._dirty or self._times_dirty)

    def save_soon(self) -> None:
        """Ask for the file to be written by the background thread: at once
        if the last write was at least ``save_interval`` ago, else when that
        much time has passed; many requests in between make one write. Cheap,
        never blocks on the disk, never raises. A failed write is logged
        (rate-limited) and retried. No-op without a path; after :meth:`close`
        it only marks the registry unsaved."""
        if self.path is None:
            return
        with self._cond:
            self._dirty = True
            if self._closed or self._worker is not None:
                return  # a running writer sees the flag
            worker = threading.Thread(target=self._run, name="smsgnet-registry-writer", daemon=True)
            self._worker = worker
        worker.start()

    def save(self) -> None:
        """Write the file now, in the caller's thread (no-op without a path).

        Waits for a background write in progress. Raises
        :class:`RegistryError` when the file cannot be written (the changes
        stay pending). In a running event loop prefer ``await flush()``.
        """
        if self.path is None:
            return
        with self._write_lock:
            with self._cond:
                self._dirty = self._times_dirty = False
            try:
                data = self._serialize()
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(self.path, data, 0o600)
            except OSError as e:
                with self._cond:
                    self._dirty = True
                raise RegistryError(f"cannot write peer registry {self.path}: {clip(e, 200)}") from None

    async def flush(self) -> None:
        """Write whatever is pending (times included) in a worker thread, and
        wait for it; return at once when nothing is. For stop. Raises
        :class:`RegistryError` when the file cannot be written."""
        if self.path is None:
            return
        await asyncio.to_thread(self._flush_blocking)

    def _flush_blocking(self) -> None:
        with self._write_lock:  # after a background write in progress
            if self.unsaved:
                self.save()

    def close(self) -> None:
        """Stop the background writer (it finishes a write in progress, and
        retries no more). Pending changes stay in memory: :meth:`flush` or
        :meth:`save` first. Later :meth:`save_soon` calls only mark the
        registry unsaved."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        """The background writer: runs while there is something to write."""
        while True:
            with self._cond:
                while True:
                    if self._closed or not self._dirty:
                        self._worker = None
                        return
                    delay = self._next_save_at - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
            self._write_in_background()

    def _write_in_background(self) -> None:
        with self._write_lock:
            with self._cond:
                if not self._dirty:
                    return  # someone saved meanwhile
            try:
                self.save()
            except Exception as e:  # RegistryError, or a bug: never let the writer die silently
                self._failures += 1
                self.failed_saves += 1
                retry = min(max(self.save_interval, 0.01) * 2 ** min(self._failures - 1, 16), MAX_RETRY_INTERVAL)
                with self._cond:
                    self._dirty = True
                    self._next_save_at = time.monotonic() + retry
                self._warnings.warn(log, "registry-save", "%s; retrying in %.1fs (%d failed writes)",
                                    clip(e, 300), retry, self._failures,
                                    exc_info=not isinstance(e, RegistryError))
                return
        if self._failures:
            log.warning("peer registry %s written again after %d failed writes", self.path, self._failures)
            self._failures = 0
        with self._cond:
            self._next_save_at = time.monotonic() + self.save_interval

    def _serialize(self) -> list[bytes | memoryview]:
        """The file's bytes, in pieces to write in turn. Runs in any thread:
        it snapshots the peer list in one step (a peer changed meanwhile may
        be saved half-updated, and is saved whole by the next write, which
        the change asked for), and yields the GIL between chunks of peers so
        the event loop thread never waits long for it."""
        peers = list(self._peers.values())
        head = orjson.dumps({"authMode": str(self.auth_mode), "allowedKeys": sorted(self._allowed_keys)})
        pieces: list[bytes | memoryview] = [head[:-1], b',"peers":[']
        for i in range(0, len(peers), _CHUNK):
            chunk = orjson.dumps([_row(p) for p in peers[i: i + _CHUNK]], option=orjson.OPT_INDENT_2)
            if i:
                pieces.append(b",")
            pieces.append(memoryview(chunk)[1:-2])  # without "[" and "\n]"
            time.sleep(0)  # let a waiting thread (the event loop) run
        pieces.append(b"\n]}\n" if peers else b"]}\n")
        return pieces

    def _load(self) -> str | None:
        assert self.path is not None
        try:
            data = orjson.loads(self.path.read_bytes())
            if not isinstance(data, dict):
                raise TypeError("top level is not an object")
            mode = data.get("authMode")
            legacy_origin = PeerOrigin.ADDED.value if mode == AuthMode.ALLOWLIST else PeerOrigin.AUTO.value
            entries = data.get("peers", [])
            if not isinstance(entries, list):
                raise TypeError("peers is not a list")
            peers = [p for p in (_peer_from_entry(e, legacy_origin) for e in entries) if p is not None]
            keys = data.get("allowedKeys", [])
            if not isinstance(keys, list):
                raise TypeError("allowedKeys is not a list")
            keys = [k for k in keys if isinstance(k, str)]
        except (OSError, orjson.JSONDecodeError, TypeError, AttributeError, ValueError) as e:
            raise RegistryError(f"cannot read peer registry {self.path}: {clip(e, 200)}") from None
        peers.sort(key=_seen)
        self._peers = OrderedDict((p.id, p) for p in peers)
        self._allowed_keys = set(keys)
        self._evict()
        return mode if isinstance(mode, str) else None
