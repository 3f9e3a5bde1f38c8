"""The connection table's rules, with fake connections and no sockets (issue 7).

One invariant: a connection is either live or pending proof, never both; only
live ones are visible. Pending connections give way; live ones never do. One
link per pair, decided alike on both sides of a dial race.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from smsgnet.table import ConnectionTable, Outcome

LOW, HIGH = "1" * 32, "f" * 32
_serial = itertools.count()


@dataclass(eq=False)
class Fake:
    peer_id: str
    outbound: bool = False
    remote_host: str = "10.0.0.1"
    established_at: float = 0.0
    dial_started: float = 0.0
    name: int = field(default_factory=lambda: next(_serial))


def table(local_id: str = LOW, **kw) -> ConnectionTable[Fake]:
    limits = dict(max_conns=10, max_pending=10, max_pending_per_peer=4, max_pending_per_address=16,
                  race_window=10.0)
    return ConnectionTable(local_id, **{**limits, **kw})


def pending(t: ConnectionTable[Fake], conn: Fake) -> list[Fake]:
    sock = object()
    assert t.admit(sock)[0]
    return t.add_pending(sock, conn)


def assert_invariant(t: ConnectionTable[Fake]) -> None:
    live = t.live()
    assert not set(map(id, live)) & set(map(id, t.pending())), "a connection is both live and pending"
    assert t.slots_in_use == t.opening_count + t.pending_count + len(live)


# -- visibility and slots ----------------------------------------------------------------


def test_a_pending_connection_is_invisible_and_counts_once():
    t = table()
    conn = Fake(HIGH)
    pending(t, conn)
    assert t.get(HIGH) is None and t.live() == [] and len(t) == 0
    assert t.is_pending(conn) and t.slots_in_use == 1
    assert_invariant(t)


def test_proof_moves_a_connection_from_pending_to_live():
    t = table()
    conn = Fake(HIGH)
    pending(t, conn)
    decision = t.adopt(conn, now=1.0)
    assert decision.outcome is Outcome.NEW and decision.adopted and decision.close is None
    assert t.get(HIGH) is conn and not t.is_pending(conn) and t.slots_in_use == 1
    assert_invariant(t)


def test_forget_reports_whether_the_connection_was_live():
    t = table()
    live, waiting = Fake(HIGH), Fake(HIGH)
    pending(t, live)
    t.adopt(live, 0.0)
    pending(t, waiting)
    assert t.forget(waiting) is False and t.forget(live) is True
    assert t.slots_in_use == 0 and t.get(HIGH) is None


def test_an_opening_socket_holds_a_slot_until_released():
    t = table(max_conns=2)
    a, b = object(), object()
    assert t.admit(a) == (True, []) and t.admit(b) == (True, [])
    assert t.admit(object()) == (False, [])  # mid-handshake sockets keep their slots
    t.release_opening(a)
    assert t.admit(object())[0]


def test_a_full_table_of_pending_connections_gives_way_to_a_new_upgrade_oldest_first():
    t = table(max_conns=3)
    first, second, third = Fake(HIGH), Fake(HIGH), Fake(HIGH)
    for c in (first, second, third):
        pending(t, c)
    admitted, victims = t.admit(object())
    assert admitted and victims == [first]
    assert t.pending() == [second, third]
    assert t.evicted == {"slots": 1}
    assert_invariant(t)


def test_live_links_never_give_way_to_an_upgrade():
    t = table(max_conns=2)
    for peer in ("a" * 32, "b" * 32):
        c = Fake(peer)
        pending(t, c)
        t.adopt(c, 0.0)
    assert t.admit(object()) == (False, [])


@pytest.mark.parametrize("cap, same", [
    ("max_pending_per_peer", dict(peer_id=HIGH, remote_host=None)),
    ("max_pending_per_address", dict(peer_id=None, remote_host="10.9.9.9")),
    ("max_pending", dict(peer_id=None, remote_host=None)),
])
def test_each_pending_cap_closes_the_oldest_in_its_group(cap, same):
    t = table(**{cap: 2})
    made = []
    for i in range(3):
        made.append(Fake(same["peer_id"] or f"{i:032x}", remote_host=same["remote_host"] or f"10.0.0.{i}"))
    assert pending(t, made[0]) == [] and pending(t, made[1]) == []
    assert pending(t, made[2]) == [made[0]]
    assert t.pending() == made[1:]
    assert_invariant(t)


def test_pending_caps_do_not_touch_other_peers():
    t = table(max_pending_per_peer=1)
    other = Fake("2" * 32)
    pending(t, other)
    pending(t, Fake(HIGH))
    assert pending(t, Fake(HIGH))[0].peer_id == HIGH
    assert other in t.pending()


# -- one link per pair ---------------------------------------------------------------------


def test_an_unproven_newcomer_cannot_displace_a_live_link():
    t = table()
    live = Fake(HIGH)
    pending(t, live)
    t.adopt(live, 0.0)
    impostor = Fake(HIGH)
    pending(t, impostor)
    assert t.get(HIGH) is live  # until it proves its key, it is nobody


def test_a_newer_proven_inbound_connection_replaces_the_old_one():
    t = table()
    old = Fake(HIGH, established_at=0.0)
    pending(t, old)
    t.adopt(old, 0.0)
    new = Fake(HIGH, established_at=100.0)
    pending(t, new)
    decision = t.adopt(new, 100.0)
    assert decision.outcome is Outcome.REPLACED and decision.live is new and decision.close is old
    assert t.get(HIGH) is new


def test_our_own_second_dial_to_a_live_peer_is_the_duplicate():
    t = table()
    live = Fake(HIGH, outbound=True, established_at=0.0)
    t.adopt(live, 0.0)
    again = Fake(HIGH, outbound=True, established_at=50.0)
    decision = t.adopt(again, 50.0)
    assert decision.outcome is Outcome.DUPLICATE and decision.live is live and decision.close is again
    assert t.get(HIGH) is live


def test_an_old_inbound_link_beats_a_late_dial_of_ours():
    t = table()
    live = Fake(HIGH, established_at=0.0)
    pending(t, live)
    t.adopt(live, 0.0)
    late = Fake(HIGH, outbound=True, established_at=50.0)
    assert t.adopt(late, 50.0).outcome is Outcome.DUPLICATE


def _race(local: str, peer: str, *, outbound_first: bool) -> Fake:
    """One side of a dial race; returns the connection this side keeps."""
    t = table(local)
    mine = Fake(peer, outbound=True, established_at=1.0, dial_started=0.9)
    theirs = Fake(peer, outbound=False, established_at=1.01)
    first, second = (mine, theirs) if outbound_first else (theirs, mine)
    if not first.outbound:
        pending(t, first)
    t.adopt(first, 1.0)
    if not second.outbound:
        pending(t, second)
    decision = t.adopt(second, 1.02)
    assert decision.outcome in (Outcome.RACE_WON, Outcome.RACE_LOST)
    assert decision.close is not None and decision.close is not decision.live
    assert t.get(peer) is decision.live
    assert_invariant(t)
    return decision.live


@pytest.mark.parametrize("low_first", [True, False])
@pytest.mark.parametrize("high_first", [True, False])
def test_both_sides_of_a_dial_race_keep_the_link_dialled_by_the_lower_id(low_first, high_first):
    # whatever order each side sees the two connections in
    kept_by_low = _race(LOW, HIGH, outbound_first=low_first)
    kept_by_high = _race(HIGH, LOW, outbound_first=high_first)
    assert kept_by_low.outbound is True     # the low node keeps the link it dialled
    assert kept_by_high.outbound is False   # the high node keeps the link the low node dialled


def test_a_dial_to_a_peer_that_was_live_before_we_dialled_is_a_duplicate_not_a_race():
    # the peer dialled us a moment ago; we dial it by an address we did not know was it
    t = table(LOW)
    theirs = Fake(HIGH, established_at=1.0)
    pending(t, theirs)
    t.adopt(theirs, 1.0)
    mine = Fake(HIGH, outbound=True, established_at=1.2, dial_started=1.1)
    decision = t.adopt(mine, 1.2)
    assert decision.outcome is Outcome.DUPLICATE and t.get(HIGH) is theirs


def test_a_link_older_than_the_race_window_is_replaced_not_raced():
    t = table(HIGH, race_window=5.0)
    mine = Fake(LOW, outbound=True, established_at=0.0)
    t.adopt(mine, 0.0)
    theirs = Fake(LOW, established_at=60.0)  # the peer restarted and dialled us
    pending(t, theirs)
    decision = t.adopt(theirs, 60.0)
    assert decision.outcome is Outcome.REPLACED and t.get(LOW) is theirs


def test_a_dial_waits_only_for_a_pending_connection_that_would_win():
    low = table(LOW)
    pending(low, Fake(HIGH))
    assert low.race_winner_pending(Fake(HIGH, outbound=True)) is None  # ours wins: no wait
    high = table(HIGH)
    theirs = Fake(LOW)
    pending(high, theirs)
    assert high.race_winner_pending(Fake(LOW, outbound=True)) is theirs
