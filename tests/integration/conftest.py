"""Real nodes on 127.0.0.1 (port 0), real sockets, real crypto."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from smsgnet import NodeManager, PeerRegistry, Transport, TransportConfig

FAST = dict(listen_addr="127.0.0.1:0", handshake_timeout=2.0, write_timeout=2.0)

MakeNode = Callable[..., Awaitable[Transport]]


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    """Start transports; every one is stopped at teardown."""
    nodes: list[Transport] = []

    async def make(name: str = "node", *, registry: PeerRegistry | None = None,
                   node: NodeManager | None = None, handler: Any = None, **cfg: Any) -> Transport:
        config = TransportConfig(**{**FAST, **cfg})
        t = Transport(node or NodeManager.generate(name), registry, config)
        if handler is not None:
            t.on_message(handler)
        await t.start()
        nodes.append(t)
        return t

    yield make
    await asyncio.gather(*(t.stop() for t in nodes))


