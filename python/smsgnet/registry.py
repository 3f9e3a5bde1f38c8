"""Known peers, who may connect, and (optionally) a JSON file that keeps them.

Auth modes:

* ``open`` — any peer that completes the handshake may connect.
* ``allowlist`` — a peer may connect when it is already registered (with the
  same public key) or its public key was allowed with :meth:`PeerRegistry.allow_key`.

The file is rewritten atomically (temporary file, fsync, rename), so a crash
mid-write leaves the previous version. The transport adds a peer that
connected to us only after it has proven it holds its key (its first
authenticated frame), never on the unauthenticated half of the handshake.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from smsgnet.exceptions import RegistryError
from smsgnet.identity import NodeIdentity, _write_atomic

__all__ = ["AuthMode", "Peer", "PeerRegistry"]


class AuthMode(StrEnum):
    """Who may connect: anyone (``open``) or only known keys (``allowlist``)."""

    OPEN = "open"
    ALLOWLIST = "allowlist"


@dataclass(slots=True)
class Peer:
    """A node we know. ``address`` is ``HOST:PORT`` or a ``ws(s)://`` URL."""

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

    @classmethod
    def from_identity(cls, identity: NodeIdentity, address: str = "") -> Peer:
        """A peer record for a verified identity."""
        return cls(
            id=identity.id,
            name=identity.name,
            public_key=identity.public_key,
            address=address,
            role=identity.role,
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


class PeerRegistry:
    """Registry of known peers, for use from one asyncio loop.

    ``path`` turns on persistence: the file is loaded now (if it exists) and
    rewritten after every change. ``auth_mode`` defaults to the mode saved in
    the file, else ``open``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, auth_mode: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._peers: dict[str, Peer] = {}
        self._allowed_keys: set[str] = set()
        saved_mode = None
        if self.path is not None and self.path.exists():
            saved_mode = self._load()
        mode = auth_mode if auth_mode is not None else (saved_mode or AuthMode.OPEN)
        try:
            self.auth_mode = AuthMode(mode)
        except ValueError:
            raise RegistryError(f"auth_mode must be 'open' or 'allowlist', got {mode!r}") from None

    # -- peers ---------------------------------------------------------------

    def add(self, peer: Peer) -> Peer:
        """Add or replace a peer (by ID) and persist."""
        if not peer.id:
            raise RegistryError("a registered peer needs an id")
        self._peers[peer.id] = peer
        self.save()
        return peer

    def get(self, peer_id: str) -> Peer | None:
        """The peer with this ID, or None."""
        return self._peers.get(peer_id)

    def remove(self, peer_id: str) -> bool:
        """Forget a peer; True when it was known."""
        if self._peers.pop(peer_id, None) is None:
            return False
        self.save()
        return True

    def peers(self) -> list[Peer]:
        """Every known peer."""
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
        """Allow a base64 public key to connect in allowlist mode."""
        self._allowed_keys.add(public_key)
        self.save()

    def revoke_key(self, public_key: str) -> None:
        """Remove a key from the allowlist (a registered peer stays registered)."""
        self._allowed_keys.discard(public_key)
        self.save()

    @property
    def allowed_keys(self) -> frozenset[str]:
        """Keys allowed to connect in allowlist mode."""
        return frozenset(self._allowed_keys)

    def is_allowed(self, peer_id: str, public_key: str) -> bool:
        """The seed's rule: open mode lets anyone in; allowlist mode lets in a
        peer already registered with this key, or whose key is allowed."""
        if self.auth_mode is AuthMode.OPEN:
            return True
        if public_key in self._allowed_keys:
            return True
        known = self._peers.get(peer_id)
        return known is not None and known.public_key == public_key

    # -- transport callbacks -----------------------------------------------------

    def mark_connected(self, identity: NodeIdentity, address: str = "") -> Peer:
        """Record a peer that has proven its key: add or update it, connected.

        The file is rewritten only when something it keeps changed (a new
        peer, a new name, role or address), not for every reconnect; times
        (``last_seen``) reach the file with the next save, e.g. at stop.
        """
        peer = self._peers.get(identity.id)
        changed = False
        if peer is None or peer.public_key != identity.public_key:
            peer = Peer.from_identity(identity, address)
            changed = True
        else:
            for attr, value in (("name", identity.name), ("role", identity.role), ("address", address)):
                if value and getattr(peer, attr) != value:
                    setattr(peer, attr, value)
                    changed = True
        peer.connected = True
        peer.last_seen = time.time()
        self._peers[identity.id] = peer
        if changed:
            self.save()
        return peer

    def mark_disconnected(self, peer_id: str) -> None:
        """Record that a peer's connection closed (in memory; see mark_connected)."""
        peer = self._peers.get(peer_id)
        if peer is not None and peer.connected:
            peer.connected = False
            peer.last_seen = time.time()

    def record_ping(self, peer_id: str, rtt_ms: float) -> None:
        """Record a round trip (not persisted on every ping)."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.ping_ms = rtt_ms
            peer.last_seen = time.time()

    # -- persistence ----------------------------------------------------------------

    def save(self) -> None:
        """Rewrite the file atomically (no-op without a path)."""
        if self.path is None:
            return
        data = {
            "authMode": str(self.auth_mode),
            "allowedKeys": sorted(self._allowed_keys),
            "peers": [dict(p.to_dict(), connected=False) for p in self._peers.values()],
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2), 0o600)
        except OSError as e:
            raise RegistryError(f"cannot write peer registry {self.path}: {e}") from None

    def _load(self) -> str | None:
        assert self.path is not None
        try:
            data = orjson.loads(self.path.read_bytes())
            if not isinstance(data, dict):
                raise TypeError("top level is not an object")
            peers = []
            for entry in data.get("peers", []):
                if not isinstance(entry, dict) or not isinstance(entry.get("id", ""), str):
                    raise TypeError(f"bad peer entry {entry!r:.80}")
                peers.append(Peer.from_dict(entry))
            keys = [k for k in data.get("allowedKeys", []) if isinstance(k, str)]
            mode = data.get("authMode")
        except (OSError, orjson.JSONDecodeError, TypeError, AttributeError, ValueError) as e:
            raise RegistryError(f"cannot read peer registry {self.path}: {e}") from None
        self._peers = {p.id: p for p in peers if p.id}
        self._allowed_keys = set(keys)
        return mode if isinstance(mode, str) else None
