"""``smsgnet demo``: three nodes in one process showing the protocol at work.

:class:`Demo` runs the steps in order (:data:`Demo.STEPS`); each one prints its
part (unless ``--json``) and fills its key of :attr:`Demo.result`, which
``--json`` prints as one object.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from smsgnet import _core
from smsgnet.config import TransportConfig
from smsgnet.connection import PeerConnection
from smsgnet.handshake import PROTOCOL_VERSION, Initiator, NoiseStage, Responder
from smsgnet.identity import NodeManager, NodeRole
from smsgnet.message import CONTROL_TYPES, Message
from smsgnet.registry import PeerRegistry
from smsgnet.transport import Transport

from smsgnet.cli import arguments
from smsgnet.cli.client import Replies
from smsgnet.cli.frames import describe_frame, seal_sample
from smsgnet.cli.output import EXIT_OK, say, say_json

#: Who takes part, and in which role.
ROLES = {"alice": NodeRole.CONTROLLER, "bob": NodeRole.WORKER, "carol": NodeRole.DUAL}
#: The newest protocol each speaks: carol speaks only 1.0, as the Go nodes do.
MAX_PROTOCOL = {"alice": "2.0", "bob": "2.0", "carol": "1.0"}
#: How long any one thing the demo waits for may take.
STEP_TIMEOUT = 2.0


def add_parser(sub: arguments.SubParsers) -> None:
    p = arguments.add_command(
        sub, "demo", run=run, help="three nodes in one process: see the protocol at work",
        description="Start alice (controller), bob (worker) and carol on 127.0.0.1 in this "
                    "process and show the handshake, messages both ways, a broadcast, a "
                    "frame on the wire, a replay being dropped, the ping time and a clean "
                    "shutdown. Loopback only; takes well under a second.")
    arguments.add_json(p, "print the results as one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.verbose == 0:
        # the demo reports the replay it provokes; keep the log warning about it out of the way
        logging.getLogger("smsgnet").setLevel(logging.ERROR)
    return asyncio.run(Demo(as_json=args.json).run())


async def wait_until(predicate: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def short(value: Any, limit: int = 90) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[:limit - 1] + "…"


class Demo:
    """The demo's nodes, what their handlers received, and the results so far."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.started = time.perf_counter()
        self.nodes = {name: NodeManager.generate(name, role) for name, role in ROLES.items()}
        self.name_of = {n.node_id: name for name, n in self.nodes.items()}
        self.received: dict[str, list[dict[str, Any]]] = {name: [] for name in ROLES}
        self.replies = Replies()
        self.transports: dict[str, Transport] = {}
        self.result: dict[str, Any] = {"nodes": {}}
        # set by the steps, used by later ones
        self.a2b: PeerConnection
        self.b2a: PeerConnection
        self.a2c: PeerConnection
        self.request: Message
        self.stats: Message
        self.announce: Message

    def out(self, text: str = "") -> None:
        if not self.as_json:
            say(text)

    def id(self, name: str) -> str:
        return self.nodes[name].node_id

    def t(self, name: str) -> Transport:
        return self.transports[name]

    async def ask(self, conn: PeerConnection, msg: Message) -> Message:
        """Send ``msg`` on ``conn`` and wait for its reply (alice sees every reply, pongs too)."""
        waiting = self.replies.expect(msg.id)
        await conn.send(msg)
        return await asyncio.wait_for(waiting, STEP_TIMEOUT)

    async def run(self) -> int:
        try:
            for step in self.STEPS:
                await step(self)
        finally:
            await asyncio.gather(*(t.stop() for t in self.transports.values()), return_exceptions=True)
        self.result["elapsedMs"] = round((time.perf_counter() - self.started) * 1000)
        if self.as_json:
            say_json(self.result)
        else:
            say(f"\ndone in {self.result['elapsedMs']} ms. Next: smsgnet serve --listen 127.0.0.1:9091 --echo, "
                "then smsgnet ping 127.0.0.1:9091 (see docs/quickstart.md)")
        return EXIT_OK

    # -- the handlers ---------------------------------------------------------------------------

    def recorder(self, me: str) -> Callable[[PeerConnection, Message], Awaitable[None]]:
        """``me``'s message handler: record what arrives; alice resolves replies, bob answers get_stats."""
        async def handle(conn: PeerConnection, msg: Message) -> None:
            if msg.type in CONTROL_TYPES and msg.type != "pong":
                return
            if msg.type != "pong":
                self.received[me].append({"type": msg.type, "from": self.name_of.get(msg.from_, msg.from_),
                                          "payload": msg.payload, "replyTo": msg.reply_to or None})
            if me == "alice":
                self.replies(conn, msg)
            if me == "bob" and msg.type == "get_stats":
                s = self.t("bob").stats()
                await conn.send(msg.reply("stats", {
                    "node": "bob", "peers": self.t("bob").connected_peers,
                    "messagesIn": s.messages_in, "messagesOut": s.messages_out,
                    "uptimeMs": round((time.perf_counter() - self.started) * 1000),
                }, from_=self.id("bob")))
        return handle

    # -- the steps, in order ----------------------------------------------------------------------

    async def start_nodes(self) -> None:
        """1. Three transports on 127.0.0.1, each on a free port."""
        for name, node in self.nodes.items():
            # alice also sees pongs, to time her pings
            config = TransportConfig(listen_addr="127.0.0.1:0", handshake_timeout=STEP_TIMEOUT,
                                     write_timeout=STEP_TIMEOUT, deliver_control_messages=(name == "alice"),
                                     max_protocol=MAX_PROTOCOL[name])
            t = Transport(node, config=config)
            t.on_message(self.recorder(name))
            await t.start()
            self.transports[name] = t
        self.out("smsgnet demo: three nodes in this process, talking over 127.0.0.1")
        self.out()
        self.out("1. Nodes (fresh X25519 key pairs, in memory; node ID = first 16 bytes of SHA-256(public key))")
        for name, t in self.transports.items():
            ident = self.nodes[name].identity
            self.result["nodes"][name] = {"id": ident.id, "role": ident.role, "publicKey": ident.public_key,
                                          "url": t.url, "maxProtocol": MAX_PROTOCOL[name]}
            self.out(f"   {name:<6} {ident.role:<10} {ident.id}  {t.url}  protocols up to {MAX_PROTOCOL[name]}")
        self.out("   (carol speaks only protocol 1.0, as the reference Go nodes do)")

    async def handshake(self) -> None:
        """2. alice connects to bob expecting his key; both derive the same secret."""
        hello = Initiator(self.nodes["alice"], offer_protocol_2=True).hello()
        ack, agreed = Responder(self.nodes["bob"], PeerRegistry(), accept_protocol_2=True).receive_hello(hello)
        assert agreed is not None
        message_1 = NoiseStage.acceptor(self.nodes["bob"], agreed).first_message()
        self.a2b = await self.t("alice").connect(self.t("bob").url,
                                                 expect_key=self.nodes["bob"].identity.public_key)
        bob = self.t("bob")
        await wait_until(lambda: bob.get_connection(self.id("alice")) is not None)
        b2a = bob.get_connection(self.id("alice"))
        assert b2a is not None
        self.b2a = b2a
        await wait_until(lambda: b2a.proven)
        same_secret = self.a2b.shared_secret == b2a.shared_secret
        protocol = self.a2b.protocol
        self.out()
        self.out(f"2. Handshake: alice connects to bob; they agree on protocol {protocol}")
        self.out(f"   alice -> bob  handshake      {len(hello):4d} bytes (clear-text JSON): alice's identity, a "
                 f"32-byte random challenge, version {PROTOCOL_VERSION}, and the offer \"protocols\": [\"2.0\"]")
        self.out(f"   bob -> alice  handshake_ack  {len(ack):4d} bytes (clear-text JSON): bob's identity, "
                 "HMAC-SHA256(pair secret, challenge), and \"protocol\": \"2.0\"")
        self.out(f"   bob -> alice  Noise IK message 1  {len(message_1)} bytes (binary): e, es, s, ss")
        self.out("   alice -> bob  Noise IK message 2  48 bytes (binary): e, ee, se")
        self.out("   both keys are proven inside the handshake, which covers the hello and the ack (the prologue);")
        self.out("   the link's keys come from fresh ephemeral keys: forward secrecy. alice also checked that bob")
        self.out("   presented the key she expected (--expect-key).")
        self.out(f"   the 1.0 pair secret (what a Go node would use) matches on both sides: "
                 f"{'yes' if same_secret else 'NO'}")
        self.result["handshake"] = {"helloBytes": len(hello), "ackBytes": len(ack), "noiseMessage1Bytes": len(message_1),
                                    "protocol": protocol, "sameSecret": same_secret, "bobSeesAliceProven": b2a.proven}

    async def messages_both_ways(self) -> None:
        """3. alice asks bob for get_stats (reply matched on replyTo); bob says hello."""
        self.request = Message.new("get_stats", self.id("alice"), self.id("bob"), {"detail": "short"})
        self.stats = await self.ask(self.a2b, self.request)
        await self.b2a.send(Message.new("hello", self.id("bob"), self.id("alice"), "hi alice, bob here"))
        await wait_until(lambda: any(m["type"] == "hello" for m in self.received["alice"]))
        request, stats = self.request, self.stats
        self.out()
        self.out("3. Messages both ways (each one a protocol 2.0 record: AES-256-GCM with a counter nonce)")
        self.out(f"   alice -> bob  get_stats  {short(request.payload)}")
        self.out(f"   bob -> alice  stats      {short(stats.payload)}")
        self.out(f"                 replyTo {stats.reply_to} "
                 f"{'= the id of get_stats' if stats.reply_to == request.id else '!= the id of get_stats (WRONG)'}")
        self.out(f"   bob -> alice  hello      {short('hi alice, bob here')}")
        self.result["request"] = {"id": request.id, "replyTo": stats.reply_to, "reply": stats.payload}

    async def broadcast(self) -> None:
        """4. carol joins both; alice's broadcast reaches everyone but alice."""
        alice, bob, carol = self.t("alice"), self.t("bob"), self.t("carol")
        await carol.connect(alice.url)
        await carol.connect(bob.url)
        cid = self.id("carol")
        await wait_until(lambda: all((c := t.get_connection(cid)) is not None and c.proven for t in (alice, bob)))
        a2c = alice.get_connection(cid)
        assert a2c is not None
        self.a2c = a2c
        self.announce = Message.new("announce", self.id("alice"), "", {"text": "new job available"})
        failures = await alice.broadcast(self.announce)

        def got_announce(name: str) -> bool:
            return any(m["type"] == "announce" for m in self.received[name])

        await wait_until(lambda: got_announce("bob") and got_announce("carol"))
        await asyncio.sleep(0.02)  # would alice's own broadcast come back to her? (it must not)
        reached = [n for n in ROLES if got_announce(n)]
        self.out()
        self.out(f"4. Broadcast: carol joins on protocol {self.a2c.protocol} (alice, bob and carol are now fully "
                 "connected)")
        self.out(f"   alice broadcasts 'announce' to every peer except the sender: reached {', '.join(reached)}"
                 f"; alice herself: {'yes (WRONG)' if 'alice' in reached else 'no'}")
        self.result["broadcast"] = {"reached": reached, "failures": {k: str(v) for k, v in failures.items()},
                                    "linksByProtocol": alice.stats().links_by_protocol}

    async def frame_on_the_wire(self) -> None:
        """5. The get_stats message as a 1.0 frame (alice -> carol) taken apart, and as a 2.0 record."""
        request = self.request
        frame = seal_sample(self.a2c, request)
        info = describe_frame(frame)
        body_len = len(request.to_json())
        carol = self.t("carol").get_connection(self.id("alice"))
        assert carol is not None
        opened = _core.SmsgCipher(carol.shared_secret).open(frame) == request.to_json()
        record_len = _core.noise_sealed_len(body_len)
        sizes = {t: len(seal_sample(self.a2c, m)) for t, m in (
            ("ping", Message.ping(self.id("alice"), self.id("bob"))),
            ("get_stats", request),
            ("stats", self.stats),
            ("announce", self.announce),
        )}
        self.out()
        self.out("5. On the wire: the get_stats message as alice would send it to carol (protocol 1.0), taken apart")
        self.out(f"   message JSON {body_len} bytes -> SMSG frame {info['frame_len']} bytes:")
        self.out(f"   magic    {info['magic']!r}                     (clear text)")
        self.out(f"   version  0x{info['version']:02x}                       (clear text)")
        self.out(f"   header   {info['header_len']} bytes {info['header']}  (clear text, NOT authenticated)")
        self.out(f"   nonce    {info['nonce_hex']}  (24 random bytes)")
        self.out(f"   sealed   {info['sealed_len']} bytes: envelope {{body, timestamp}} XOR SHA-256 keystream, "
                 "XChaCha20-Poly1305, 16-byte tag")
        self.out(f"   carol opens it with the key she derived herself: {'yes' if opened else 'NO'}")
        self.out("   1.0 frame sizes: " + ", ".join(f"{t} {n} B" for t, n in sizes.items()))
        self.out(f"   to bob (protocol 2.0) the same message is one {record_len}-byte record: a flags byte, the "
                 "JSON and a 16-byte tag, all of it authenticated, nothing in clear text")
        self.result["frame"] = {**info, "messageJsonLen": body_len, "carolOpensIt": opened, "sizes": sizes,
                                "record2Len": record_len}

    async def replay(self) -> None:
        """6. The same message twice: bob delivers it once and counts a duplicate."""
        copy = Message.new("note", self.id("alice"), self.id("bob"), "sent twice, delivered once")
        await self.a2b.send(copy)
        await self.a2b.send(copy)  # same id again: a replay
        # bob reads in order: once this is answered, the copy has been handled
        await self.ask(self.a2b, Message.new("get_stats", self.id("alice"), self.id("bob")))
        notes = sum(1 for m in self.received["bob"] if m["type"] == "note")
        self.out()
        self.out("6. Replay: alice sends the same message (same id) twice")
        self.out(f"   bob delivered it {notes} time(s) and dropped the copy: drops {self.t('bob').stats().drops}")

    async def ping(self) -> None:
        """7. Three ping/pong round trips alice -> bob -> alice."""
        rtts = []
        for _ in range(3):
            t0 = time.perf_counter()
            await self.ask(self.a2b, Message.ping(self.id("alice"), self.id("bob")))
            rtts.append((time.perf_counter() - t0) * 1000.0)
        self.out()
        self.out("7. Ping: alice -> bob -> alice, round-trip times " + ", ".join(f"{r:.3f} ms" for r in rtts))
        self.result["pingMs"] = [round(r, 3) for r in rtts]

    async def received_and_drops(self) -> None:
        """8. What each handler received, and each node's counters."""
        self.out()
        self.out("8. What each node's handler received, and the frames each dropped")
        self.result["received"] = self.received
        self.result["drops"] = {}
        for name, t in self.transports.items():
            got = ", ".join(f"{m['type']} (from {m['from']})" for m in self.received[name]) or "nothing"
            st = t.stats()
            self.result["drops"][name] = st.drops
            self.out(f"   {name:<6} {got}")
            self.out(f"          messages in {st.messages_in}, out {st.messages_out}; drops: {st.drops or 'none'}")

    async def shutdown(self) -> None:
        """9. alice stops first: bob sees code 1004; then the others stop."""
        t0 = time.perf_counter()
        b2a = self.b2a
        await self.t("alice").stop()
        await wait_until(lambda: b2a.state.value == "closed")
        self.out()
        self.out("9. Shutdown: alice stops first")
        self.out(f"   bob saw: disconnect code {b2a.close_code} ({b2a.close_reason!r}), "
                 f"sent by alice: {b2a.closed_by_peer}")
        await asyncio.gather(self.t("bob").stop(), self.t("carol").stop())
        self.out(f"   all three nodes stopped in {(time.perf_counter() - t0) * 1000:.0f} ms")
        self.result["shutdown"] = {"bobSawCode": b2a.close_code, "reason": b2a.close_reason}

    STEPS: tuple[Callable[[Demo], Awaitable[None]], ...] = (
        start_nodes, handshake, messages_both_ways, broadcast, frame_on_the_wire, replay, ping,
        received_and_drops, shutdown,
    )
