"""Protocol 2.0 over real sockets (docs/protocol.md, "Protocol 2.0").

Two smsgnet nodes negotiate 2.0 inside the 1.0 hello and ack; a peer that
speaks only the reference's 1.0 gets 1.0 in both directions; a man in the
middle that strips the offer meets a refusal where 2.0 is required and a
fallback only where it is allowed; recorded 2.0 traffic stays unreadable with
both long-term private keys; a recorded 2.0 frame replayed into a connection
is refused.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import serve

from smsgnet import (
    AuthenticationFailedError,
    DowngradeRefused,
    HandshakeRefused,
    Message,
    NodeManager,
    PeerAuthenticationError,
    PeerRegistry,
    SmsgError,
    _core,
)
from smsgnet.message import b64decode, b64encode

from netkit import Inbox, Proxy, RawPeer, wait_for


def strip_offer(hello: dict[str, Any]) -> None:
    hello["payload"].pop("protocols", None)


def strip_answer(ack: dict[str, Any]) -> None:
    ack["payload"].pop("protocol", None)


class ReferenceResponder:
    """A 1.0-only node, PROTOCOL.md §5 to the letter: it reads the hello the way
    the Go nodes' JSON decoding does (unknown fields ignored), answers a plain
    1.0 ack, then speaks SMSG: a pong for a ping, ``echo`` for anything else."""

    def __init__(self) -> None:
        self.node = NodeManager.generate("reference")
        self.hellos: list[dict[str, Any]] = []
        self.received: list[Message] = []
        self.url = ""

    async def __aenter__(self) -> ReferenceResponder:
        self.server = await serve(self._serve, "127.0.0.1", 0, compression=None, ping_interval=None)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ws"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, ws: Any) -> None:
        hello = orjson.loads(await ws.recv())
        self.hellos.append(hello)
        p = hello["payload"]
        assert p["version"] == "1.0"
        secret = self.node.derive_shared_secret(b64decode(p["identity"]["publicKey"]))
        ack = Message(type="handshake_ack", from_=self.node.node_id, to=p["identity"]["id"], payload={
            "identity": self.node.identity.to_dict(),
            "challengeResponse": b64encode(_core.sign_challenge(b64decode(p["challenge"]), secret)),
            "accepted": True,
        })
        await ws.send(ack.to_json().decode())
        cipher = _core.SmsgCipher(secret)
        async for frame in ws:
            msg = Message.from_json(cipher.open(frame))
            self.received.append(msg)
            if msg.type == "ping":
                reply = msg.pong(int(time.time() * 1000))
                reply.from_ = self.node.node_id
            elif msg.type == "disconnect":
                return
            else:
                reply = Message.new("echo", self.node.node_id, msg.from_, msg.payload)
                reply.reply_to = msg.id
            await ws.send(cipher.seal(reply.to_json()))


# -- negotiation -------------------------------------------------------------------------------


async def test_two_smsgnet_nodes_negotiate_2_0_and_use_it_both_ways(make_node):
    a_inbox, b_inbox = Inbox(), Inbox()
    b = await make_node("b", handler=b_inbox)
    a = await make_node("a", handler=a_inbox)
    conn = await a.connect(b.address)
    assert conn.protocol == "2.0" and conn.proven
    await wait_for(lambda: b.get_connection(a.node.node_id) is not None)
    back = b.get_connection(a.node.node_id)
    assert back.protocol == "2.0" and back.proven  # proven by the handshake: no proof ping
    await conn.send(Message.new("up", "", b.node.node_id, {"i": 1}))
    assert (await b_inbox.get()).payload == {"i": 1}
    await back.send(Message.new("down", "", a.node.node_id, {"i": 2}))
    assert (await a_inbox.get()).payload == {"i": 2}
    await conn.ping()
    await wait_for(lambda: conn.ping_ms is not None)
    assert a.stats().links_by_protocol == {"1.0": 0, "2.0": 1} == b.stats().links_by_protocol
    # both registries remember: 1.0 with this peer would now be a downgrade
    assert a.registry.requires_protocol_2(b.node.node_id) and b.registry.requires_protocol_2(a.node.node_id)
    # no timestamps to age, no replay table consulted: a 2.0 link has no "stale" drops
    assert a.stats().drops == {} == b.stats().drops


async def test_the_same_message_twice_is_delivered_once_on_2_0_too(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox)
    a = await make_node("a")
    conn = await a.connect(b.address)
    msg = Message.new("once", "", b.node.node_id)
    await conn.send(msg)
    await conn.send(msg)
    await conn.send(Message.new("marker", "", b.node.node_id))
    assert [(await inbox.get()).type for _ in range(2)] == ["once", "marker"]
    assert b.stats().drops == {"duplicate": 1}
    assert conn.is_open


async def test_a_message_larger_than_a_noise_record_and_rekeying_links(make_node):
    inbox, back_inbox = Inbox(), Inbox()
    b = await make_node("b", handler=inbox, rekey_interval=3)
    a = await make_node("a", handler=back_inbox, rekey_interval=5)
    conn = await a.connect(b.address)
    big = "x" * 300_000  # five records of 65,535 bytes in one frame
    await conn.send(Message.new("big", "", b.node.node_id, {"data": big}))
    assert (await inbox.get()).payload["data"] == big
    back = b.get_connection(a.node.node_id)
    for i in range(20):
        await conn.send(Message.new("n", "", b.node.node_id, {"i": i}))
        await back.send(Message.new("n", "", a.node.node_id, {"i": i}))
    assert [(await inbox.get()).payload["i"] for _ in range(20)] == list(range(20))
    assert [(await back_inbox.get()).payload["i"] for _ in range(20)] == list(range(20))
    # each side rekeys on its own interval and the other follows the flag
    sent_a, sent_b = conn.session.messages_out, back.session.messages_out  # pings and pongs included
    assert sent_a >= 21 and sent_b >= 20
    assert conn.session.link.rekeys == (sent_a // 5, sent_b // 3)
    assert back.session.link.rekeys == (sent_b // 3, sent_a // 5)


async def test_broadcast_reaches_1_0_and_2_0_peers_alike(make_node):
    hub = await make_node("hub")
    inbox = Inbox()
    modern = await make_node("modern", handler=inbox)
    await modern.connect(hub.address)
    legacy = await RawPeer.connect(hub.url)  # a 1.0-only initiator
    await legacy.send(legacy.message("ping", {"sentAt": 1}))  # its proof of key
    await legacy.recv_until("pong")
    await wait_for(lambda: hub.connected_peers == 2)
    assert hub.stats().links_by_protocol == {"1.0": 1, "2.0": 1}
    assert await hub.broadcast(Message.new("news", "", "", {"n": 1})) == {}
    assert (await inbox.get()).payload == {"n": 1}
    assert (await legacy.recv_until("news")).payload == {"n": 1}


# -- 1.0 peers, both directions ------------------------------------------------------------------


async def test_a_reference_1_0_initiator_gets_plain_1_0(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox)
    legacy = await RawPeer.connect(b.url)
    await legacy.send(legacy.message("hello", {"x": 1}))
    assert (await inbox.get()).payload == {"x": 1}
    conn = b.get_connection(legacy.node.node_id)
    assert conn.protocol == "1.0"
    assert b.stats().links_by_protocol == {"1.0": 1, "2.0": 0}


async def test_smsgnet_dialling_a_reference_1_0_responder_runs_1_0(make_node):
    async with ReferenceResponder() as ref:
        a = await make_node("a")
        conn = await a.connect(ref.url)
        assert conn.protocol == "1.0"
        # the offer rode in the hello, and the reference answered as it always does
        assert ref.hellos[0]["payload"]["protocols"] == ["2.0"]
        assert ref.hellos[0]["payload"]["version"] == "1.0"
        reply = await conn.request(Message.new("hi", "", ref.node.node_id, {"v": 7}), timeout=3)
        assert reply.type == "echo" and reply.payload == {"v": 7}
        await conn.ping()
        await wait_for(lambda: conn.ping_ms is not None)


async def test_min_protocol_2_0_refuses_1_0_both_ways(make_node):
    strict = await make_node("strict", min_protocol="2.0")
    with pytest.raises(HandshakeRefused, match="protocol 2.0 required"):
        await RawPeer.connect(strict.url)
    assert strict.stats().downgrades_refused == 1
    async with ReferenceResponder() as ref:
        with pytest.raises(DowngradeRefused, match="min_protocol"):
            await strict.connect(ref.url)
    assert strict.stats().downgrades_refused == 2
    # another smsgnet node is welcome
    other = await make_node("other")
    assert (await other.connect(strict.address)).protocol == "2.0"


# -- downgrade through a man in the middle ----------------------------------------------------------


async def test_stripping_the_offer_makes_a_pinned_peer_refuse(make_node):
    b = await make_node("b")
    a = await make_node("a")
    first = await a.connect(b.address)
    assert first.protocol == "2.0"
    await first.graceful_close("bye")
    await wait_for(lambda: b.connected_peers == 0)
    # the responder refuses the stripped hello: this peer spoke 2.0 before
    async with Proxy(b.url, rewrite_hello=strip_offer) as mitm:
        with pytest.raises(HandshakeRefused, match="seen on 2.0"):
            await a.connect(mitm.url)
    # the initiator refuses a stripped answer for the same reason
    async with Proxy(b.url, rewrite_ack=strip_answer) as mitm:
        with pytest.raises(DowngradeRefused, match="seen on 2.0"):
            await a.connect(mitm.url)
    assert b.stats().downgrades_refused == 1 and a.stats().downgrades_refused == 1
    assert a.connected_peers == 0 and b.connected_peers == 0
    # until the user clears it: then the stripped link falls back to 1.0
    assert a.registry.forget_protocol(b.node.node_id) and b.registry.forget_protocol(a.node.node_id)
    async with Proxy(b.url, rewrite_hello=strip_offer) as mitm:
        assert (await a.connect(mitm.url)).protocol == "1.0"


async def test_stripping_the_offer_from_an_unpinned_peer_falls_back_only_when_allowed(make_node):
    b = await make_node("b")
    a = await make_node("a")
    async with Proxy(b.url, rewrite_hello=strip_offer) as mitm:
        conn = await a.connect(mitm.url)  # never seen before, 1.0 allowed: falls back
        assert conn.protocol == "1.0"
        await conn.send(Message.new("x", "", b.node.node_id))
        assert not b.registry.requires_protocol_2(a.node.node_id)  # 1.0 pins nothing
    strict_b = await make_node("strict_b", min_protocol="2.0")
    strict_a = await make_node("strict_a", min_protocol="2.0")
    async with Proxy(strict_b.url, rewrite_hello=strip_offer) as mitm:
        with pytest.raises(HandshakeRefused, match="protocol 2.0 required"):
            await a.connect(mitm.url)
    async with Proxy(b.url, rewrite_ack=strip_answer) as mitm:
        with pytest.raises(DowngradeRefused, match="min_protocol"):
            await strict_a.connect(mitm.url)


async def test_any_other_change_to_the_hello_or_ack_fails_the_2_0_handshake(make_node):
    b = await make_node("b")
    a = await make_node("a")

    def rename(msg: dict[str, Any]) -> None:
        msg["payload"]["identity"]["name"] = "mallory"

    for side in ("rewrite_hello", "rewrite_ack"):
        async with Proxy(b.url, **{side: rename}) as mitm:
            # the two prologues differ: the dialler cannot read message 1
            with pytest.raises(PeerAuthenticationError, match="handshake message did not verify"):
                await a.connect(mitm.url)
        assert a.connected_peers == 0 and b.connected_peers == 0
    assert a.stats().handshakes_failed == 2
    await wait_for(lambda: b.stats().handshakes_failed == 2)  # no message 2 came: closed


# -- what a recording is worth -------------------------------------------------------------------------


async def test_recorded_2_0_traffic_cannot_be_read_with_both_long_term_keys(make_node):
    inbox, back_inbox = Inbox(), Inbox()
    b = await make_node("b", handler=inbox)
    a = await make_node("a", handler=back_inbox)
    secret_up, secret_down = "attack at dawn " * 8, "retreat at dusk " * 8
    async with Proxy(b.url) as tap:
        conn = await a.connect(tap.url)
        assert conn.protocol == "2.0"
        await conn.send(Message.new("plan", "", b.node.node_id, {"text": secret_up}))
        assert (await inbox.get()).payload["text"] == secret_up
        await b.get_connection(a.node.node_id).send(Message.new("plan", "", a.node.node_id, {"text": secret_down}))
        assert (await back_inbox.get()).payload["text"] == secret_down
        hello, ack = tap.texts("up")[0].encode(), tap.texts("down")[0].encode()
        m1, *down = tap.frames("down")
        m2, *up = tap.frames("up")
    assert up and down
    recorded = b"".join([m1, m2, *up, *down])
    assert b"attack" not in recorded and b"retreat" not in recorded

    # the attacker now holds both long-term private keys...
    a_key, b_key = a.node.private_key, b.node.private_key
    # ...1.0's pair key (SHA-256 of X25519 of the two identity keys) opens nothing
    cipher = _core.SmsgCipher(_core.derive_shared_secret(a_key, b.node.public_key))
    for frame in up + down:
        with pytest.raises(SmsgError):
            cipher.open(frame)
    prologue = _core.noise_prologue(hello, ack)
    # ...replaying the dialler's side: message 1 reads (it was sent to a's key),
    # but the transport keys also need b's ephemeral key, long gone
    dialler = _core.NoiseHandshake.dialler(a_key, prologue)
    dialler.read_message(m1)
    dialler.write_message()
    link = dialler.into_link()
    with pytest.raises(AuthenticationFailedError):
        link.open(down[0])
    # ...replaying the acceptor's side: a's recorded message 2 answered b's old ephemeral key
    acceptor = _core.NoiseHandshake.acceptor(b_key, a.node.public_key, prologue)
    acceptor.write_message()
    with pytest.raises(PeerAuthenticationError):
        acceptor.read_message(m2)


async def test_a_recorded_2_0_frame_replayed_into_a_new_connection_is_refused(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox)
    a = await make_node("a")
    async with Proxy(b.url) as tap:
        conn = await a.connect(tap.url)
        await conn.send(Message.new("pay", "", b.node.node_id, {"amount": 100}))
        assert (await inbox.get()).payload == {"amount": 100}
        recorded = tap.frames("up")[1]  # after message 2: the sealed "pay"
        await conn.graceful_close("bye")
    await wait_for(lambda: b.connected_peers == 0)
    async with Proxy(b.url) as mitm:
        mitm.inject_up = [recorded]  # right after the new link's message 2
        conn = await a.connect(mitm.url)
        await wait_for(lambda: not conn.is_open)
    assert await inbox.nothing_within(0.3)  # paid once
    assert b.stats().drops.get("undecryptable") == 1


async def test_a_frame_replayed_within_the_same_2_0_connection_closes_it(make_node):
    inbox = Inbox()
    b = await make_node("b", handler=inbox)
    a = await make_node("a")
    async with Proxy(b.url) as tap:
        conn = await a.connect(tap.url)
        await conn.send(Message.new("pay", "", b.node.node_id, {"amount": 5}))
        assert (await inbox.get()).payload == {"amount": 5}
        await tap.upstream.send(tap.frames("up")[-1])  # the same frame again, same connection
        await wait_for(lambda: not conn.is_open)
    assert await inbox.nothing_within(0.3)  # paid once
    assert b.stats().drops.get("undecryptable") == 1
