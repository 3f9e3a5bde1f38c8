"""Helpers for integration tests: an inbox handler and a hand-driven raw peer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from smsgnet import Message, NodeManager, _core
from smsgnet.handshake import HandshakeResult, Initiator


class Inbox:
    """A message handler that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Any, Message]] = asyncio.Queue()

    def __call__(self, conn: Any, msg: Message) -> None:
        self.queue.put_nowait((conn, msg))

    async def get(self, timeout: float = 3.0) -> Message:
        return (await asyncio.wait_for(self.queue.get(), timeout))[1]

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.queue.get(), seconds)
        except TimeoutError:
            return True
        return False


class RawPeer:
    """A hand-driven protocol peer: real websockets, real handshake crypto,
    every frame chosen by the test. Used to attack and to misbehave."""

    def __init__(self, ws: ClientConnection, node: NodeManager, result: HandshakeResult | None) -> None:
        self.ws = ws
        self.node = node
        self.result = result
        self.cipher = _core.SmsgCipher(result.shared_secret) if result else None

    @classmethod
    async def connect(cls, url: str, node: NodeManager | None = None, *, hello: bytes | None = None,
                      **kw: Any) -> RawPeer:
        node = node or NodeManager.generate("raw")
        ws = await connect(url, compression=None, ping_interval=None, proxy=None, **kw)
        initiator = Initiator(node)
        await ws.send(hello if hello is not None else initiator.hello(), text=True)
        ack = await asyncio.wait_for(ws.recv(), 3)
        result = initiator.receive_ack(ack) if hello is None else None
        return cls(ws, node, result)

    def message(self, type: str = "note", payload: Any = None, **kw: Any) -> Message:
        assert self.result is not None
        return Message(type=type, payload=payload, from_=self.node.node_id, to=self.result.peer.id, **kw)

    def seal(self, msg: Message) -> bytes:
        assert self.cipher is not None
        return self.cipher.seal(msg.to_json())

    async def send(self, msg: Message) -> bytes:
        frame = self.seal(msg)
        await self.ws.send(frame)
        return frame

    async def recv_message(self, timeout: float = 3.0) -> Message:
        assert self.cipher is not None
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        return Message.from_json(self.cipher.open(frame))

    async def recv_until(self, type: str, timeout: float = 3.0) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv_message(timeout)
                if msg.type == type:
                    return msg

    async def close(self) -> None:
        await self.ws.close()


def hello_json(node: NodeManager, **payload_overrides: Any) -> bytes:
    """A handshake message with fields overridden (for refusals and forgeries)."""
    msg = orjson.loads(Initiator(node).hello())
    msg["payload"].update(payload_overrides)
    return orjson.dumps(msg)


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0, step: float = 0.01) -> None:
    """Poll until predicate() is true (fails the test on timeout)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)


async def impostor(url: str, claimed: NodeManager, **kw: Any) -> ClientConnection:
    """A socket that completes the keyless half of the handshake under someone
    else's public identity (it has its own private key, not theirs)."""
    own = NodeManager.generate("impostor")
    msg = orjson.loads(Initiator(own).hello())
    msg["payload"]["identity"] = claimed.identity.to_dict()
    msg["from"] = claimed.node_id
    ws = await connect(url, compression=None, ping_interval=None, proxy=None, **kw)
    await ws.send(orjson.dumps(msg), text=True)
    ack = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
    assert ack["payload"]["accepted"] is True, ack
    return ws


class Proxy:
    """A man in the middle at the WebSocket layer: real sockets both sides.

    Accepts on 127.0.0.1, dials ``target`` for each connection, and relays
    frames both ways, recording each as ``(direction, frame)`` with direction
    ``"up"`` (dialler → target) or ``"down"``. ``rewrite_hello`` /
    ``rewrite_ack`` change the first TEXT frame of their direction (the
    handshake) before it goes on; ``inject_up`` frames are sent to the target
    right after the first binary frame that goes up (a 2.0 link's message 2).
    """

    def __init__(self, target: str, *, rewrite_hello: Callable[[dict[str, Any]], None] | None = None,
                 rewrite_ack: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.target = target
        self.rewrite_hello = rewrite_hello
        self.rewrite_ack = rewrite_ack
        self.inject_up: list[bytes] = []
        self.recorded: list[tuple[str, bytes | str]] = []
        self.server: Any = None
        self.url = ""
        #: the socket to the target of the latest relayed connection
        self.upstream: Any = None

    async def __aenter__(self) -> Proxy:
        from websockets.asyncio.server import serve

        self.server = await serve(self._relay, "127.0.0.1", 0, compression=None, ping_interval=None)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @staticmethod
    def _rewrite(frame: bytes | str, change: Callable[[dict[str, Any]], None]) -> str:
        msg = orjson.loads(frame)
        change(msg)
        return orjson.dumps(msg).decode()

    async def _relay(self, down: Any) -> None:
        async with connect(self.target, compression=None, ping_interval=None, proxy=None) as up:
            self.upstream = up
            async def pump(src: Any, dst: Any, direction: str, change: Any) -> None:
                first_text, first_binary = True, True
                try:
                    async for frame in src:
                        if isinstance(frame, str) and first_text:
                            first_text = False
                            if change is not None:
                                frame = self._rewrite(frame, change)
                        self.recorded.append((direction, frame))
                        await dst.send(frame)
                        if isinstance(frame, bytes) and first_binary and direction == "up":
                            first_binary = False
                            for extra in self.inject_up:
                                await dst.send(extra)
                except Exception:
                    pass
                finally:
                    await dst.close()

            await asyncio.gather(pump(down, up, "up", self.rewrite_hello),
                                 pump(up, down, "down", self.rewrite_ack))

    def frames(self, direction: str) -> list[bytes]:
        """The binary frames that went ``direction``, in order."""
        return [f for d, f in self.recorded if d == direction and isinstance(f, bytes)]

    def texts(self, direction: str) -> list[str]:
        return [f for d, f in self.recorded if d == direction and isinstance(f, str)]
