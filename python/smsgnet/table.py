"""The connection table, sans I/O: who is live, who is pending proof, who gives way.

Theory of operation::

    upgrade admitted ─▶ OPENING ── handshake done ──▶ PENDING ── key proven ──▶ LIVE
    (a slot)            (socket)   (inbound only)     (conn)    (or outbound:   (one per peer)
                                                                 HMAC checked)

One invariant carries the rules: **a connection is either live or pending
proof, never both**, and only live connections are visible (``get``, ``live``,
``peer_ids``). Every state holds a slot; ``slots_in_use`` counts each socket
exactly once toward ``max_conns``.

*Pending gives way.* A connection that has not proven its key is worth
nothing to anyone yet, so keyless sockets must not keep out a peer that can
prove its key. Pending connections are capped per claimed peer ID, per remote
host and in total; at a cap, and when a new upgrade finds every slot taken,
the oldest pending connection is named as the victim that the I/O layer
closes. Sockets still mid-handshake keep their slots (the handshake timeout
bounds them), as PROTOCOL.md §7 counts them. Live links never give way to newcomers.

*One link per pair.* When a proven connection meets a live link to the same
peer the table decides, and both nodes decide alike without talking:

- a **dial race** (one link dialled by each side, the live one younger than
  ``race_window`` and, for our own dial, live only since after we started
  dialling): keep the connection dialled by the lower node ID, close the
  other quietly (no callbacks: the peer never stopped being connected);
- our **own new dial** reaching a peer that is already live: keep the live
  link, close the new one quietly;
- a **newer inbound** connection from a peer that is live (it restarted, or
  moved): the newcomer replaces the old link (which is closed as replaced).

Nothing here touches a socket or a clock: the caller passes ``now`` and acts
on the decisions returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Protocol, TypeVar

__all__ = ["ConnectionTable", "TableEntry", "Adoption", "Outcome"]


class TableEntry(Protocol):
    """What the table needs to know about a connection."""

    @property
    def peer_id(self) -> str: ...

    @property
    def outbound(self) -> bool: ...

    @property
    def remote_host(self) -> str: ...

    @property
    def established_at(self) -> float: ...

    @property
    def dial_started(self) -> float: ...


C = TypeVar("C", bound=TableEntry)


class Outcome(Enum):
    """What :meth:`ConnectionTable.adopt` decided."""

    #: No live link to that peer before: the connection is live now.
    NEW = "new"
    #: A newer proven connection replaced a live one (the peer reconnected).
    REPLACED = "replaced"
    #: Dial race won: the connection replaced the losing one, quietly.
    RACE_WON = "race_won"
    #: Dial race lost: the live link stays, the new connection is closed quietly.
    RACE_LOST = "race_lost"
    #: Our dial reached a peer that is already live: the live link stays.
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Adoption(Generic[C]):
    """The decision for one proven connection: which one is live, which one to close."""

    outcome: Outcome
    live: C
    close: C | None

    @property
    def adopted(self) -> bool:
        """True when the offered connection is now the live one."""
        return self.outcome in (Outcome.NEW, Outcome.REPLACED, Outcome.RACE_WON)


class ConnectionTable(Generic[C]):
    """Live links by peer ID, connections pending proof, and slot accounting."""

    def __init__(
        self,
        local_id: str,
        *,
        max_conns: int,
        max_pending: int,
        max_pending_per_peer: int,
        max_pending_per_address: int,
        race_window: float,
    ) -> None:
        self.local_id = local_id
        self.max_conns = max_conns
        self.max_pending = max_pending
        self.max_pending_per_peer = max_pending_per_peer
        self.max_pending_per_address = max_pending_per_address
        self.race_window = race_window
        self._live: dict[str, C] = {}
        self._pending: dict[C, None] = {}  # insertion order: oldest first
        self._opening: dict[object, None] = {}
        #: Sockets closed to make room, by cause (for stats).
        self.evicted: dict[str, int] = {}

    # -- what is visible -----------------------------------------------------------

    def get(self, peer_id: str) -> C | None:
        """The live link to ``peer_id``, or None (pending connections are invisible)."""
        return self._live.get(peer_id)

    def live(self) -> list[C]:
        """A snapshot of the live links."""
        return list(self._live.values())

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, conn: object) -> bool:
        return conn in self._pending or any(c is conn for c in self._live.values())

    def is_live(self, conn: C) -> bool:
        """True when ``conn`` is the live link of its peer."""
        return self._live.get(conn.peer_id) is conn

    def is_pending(self, conn: C) -> bool:
        return conn in self._pending

    def pending(self) -> list[C]:
        """A snapshot of the connections pending proof, oldest first."""
        return list(self._pending)

    def pending_for(self, peer_id: str) -> Iterator[C]:
        return (c for c in self._pending if c.peer_id == peer_id)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def opening_count(self) -> int:
        return len(self._opening)

    @property
    def slots_in_use(self) -> int:
        """Sockets counted toward ``max_conns``: opening + pending + live, each once."""
        return len(self._opening) + len(self._pending) + len(self._live)

    def _evict(self, cause: str) -> None:
        self.evicted[cause] = self.evicted.get(cause, 0) + 1

    # -- opening: an upgrade took a slot; the handshake has not finished -------------------

    def admit(self, socket: object) -> tuple[bool, list[object]]:
        """Give ``socket`` a slot. Returns (admitted, victims to close).

        When every slot is taken, the oldest connection pending proof of key
        gives way; when only live links and sockets mid-handshake (bounded by
        the handshake timeout) hold the slots, the upgrade is refused."""
        victims: list[object] = []
        if self.slots_in_use >= self.max_conns:
            if not self._pending:
                return False, []
            victim = next(iter(self._pending))
            del self._pending[victim]
            self._evict("slots")
            victims.append(victim)
        self._opening[socket] = None
        return True, victims

    def release_opening(self, socket: object) -> None:
        """The socket's handshake ended (done or failed): free its opening slot."""
        self._opening.pop(socket, None)

    def prune_opening(self, is_gone: object) -> None:
        """Drop opening sockets for which ``is_gone(socket)`` is true (an upgrade that died
        before its handler ran never calls :meth:`release_opening`)."""
        for s in [s for s in self._opening if is_gone(s)]:  # type: ignore[operator]
            del self._opening[s]

    # -- pending: handshake done, key not yet proven --------------------------------------------

    def add_pending(self, socket: object, conn: C) -> list[C]:
        """``conn`` finished the handshake on ``socket`` (which leaves *opening*).
        Returns the pending connections that must give way to respect the caps."""
        self._opening.pop(socket, None)
        victims: list[C] = []
        for limit, same, cause in (
            (self.max_pending_per_peer, lambda c: c.peer_id == conn.peer_id, "pending_per_peer"),
            (self.max_pending_per_address, lambda c: c.remote_host == conn.remote_host, "pending_per_address"),
            (self.max_pending, lambda c: True, "pending_total"),
        ):
            group = [c for c in self._pending if same(c)]
            while len(group) >= limit:
                victim = group.pop(0)
                del self._pending[victim]
                victims.append(victim)
                self._evict(cause)
        self._pending[conn] = None
        return victims

    # -- live --------------------------------------------------------------------------------------

    def _dialled_by(self, conn: C) -> str:
        return self.local_id if conn.outbound else conn.peer_id

    def race_winner_pending(self, conn: C) -> C | None:
        """For our outbound ``conn``: a pending inbound from the same peer that
        would win a dial race against it (the peer's ID is lower), or None."""
        if not conn.outbound or conn.peer_id >= self.local_id:
            return None
        return next(self.pending_for(conn.peer_id), None)

    def adopt(self, conn: C, now: float) -> Adoption[C]:
        """``conn`` has proven its key (outbound: HMAC checked; inbound: first
        authentic frame). Decide whether it becomes the live link."""
        self._pending.pop(conn, None)
        old = self._live.get(conn.peer_id)
        if old is None or old is conn:
            self._live[conn.peer_id] = conn
            return Adoption(Outcome.NEW, conn, None)
        raced = old.outbound != conn.outbound and now - old.established_at < self.race_window
        if raced and conn.outbound and old.established_at <= conn.dial_started:
            raced = False  # the peer was live before we dialled: a duplicate, not a race
        if raced:
            if self._dialled_by(conn) < self._dialled_by(old):
                self._live[conn.peer_id] = conn
                return Adoption(Outcome.RACE_WON, conn, old)
            return Adoption(Outcome.RACE_LOST, old, conn)
        if conn.outbound:
            return Adoption(Outcome.DUPLICATE, old, conn)
        self._live[conn.peer_id] = conn
        return Adoption(Outcome.REPLACED, conn, old)

    def forget(self, conn: C) -> bool:
        """``conn`` closed. Returns True when it was the live link of its peer."""
        self._pending.pop(conn, None)
        if self._live.get(conn.peer_id) is conn:
            del self._live[conn.peer_id]
            return True
        return False
