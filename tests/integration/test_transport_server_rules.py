"""What the listening side refuses, and when (PROTOCOL.md §5, §7)."""

from __future__ import annotations

import asyncio

import pytest
from netkit import Inbox, RawPeer, hello_json, wait_for
from selfsigned import make_certificate
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from smsgnet import (
    AuthMode,
    ConnectFailedError,
    HandshakeRefused,
    HandshakeTimeout,
    Message,
    NodeManager,
    PeerRegistry,
)
from smsgnet.handshake import Initiator


async def raw_ws(url: str, **kw):
    return await connect(url, compression=None, ping_interval=None, proxy=None, **kw)


async def test_unsupported_version_is_refused_with_its_reason(make_node):
    b = await make_node("b")
    ws = await raw_ws(b.url)
    await ws.send(hello_json(NodeManager.generate("a"), version="2.0"), text=True)
    ack = await asyncio.wait_for(ws.recv(), 3)
    import orjson
    payload = orjson.loads(ack)["payload"]
    assert payload["accepted"] is False
    assert payload["reason"] == "incompatible protocol version 2.0, supported: [1.0]"
    assert payload["identity"]["id"] == b.node.node_id
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 3)  # and the responder closes
    assert b.stats().handshakes_refused == 1


async def test_allowlist_refusal_reaches_the_initiator_as_an_exception(make_node):
    b = await make_node("b", registry=PeerRegistry(auth_mode=AuthMode.ALLOWLIST))
    a = await make_node("a")
    with pytest.raises(HandshakeRefused) as refused:
        await a.connect(b.address)
    assert refused.value.reason == "peer not authorized"
    assert b.connected_peers == 0

    b.registry.allow_key(a.node.identity.public_key)
    conn = await a.connect(b.address)
    assert conn.proven


def _slots(t):
    s = t.stats()
    return s.connections + s.unproven_connections + s.handshaking


async def test_connection_over_the_limit_gets_503_while_one_is_mid_handshake(make_node):
    b = await make_node("b", max_conns=2, handshake_timeout=3.0)
    a = await make_node("a")
    await a.connect(b.address)  # 1 established
    pending = await raw_ws(b.url)  # 2: upgraded, handshake not sent yet
    await wait_for(lambda: _slots(b) == 2)
    with pytest.raises(InvalidStatus) as refused:
        await raw_ws(b.url)
    assert refused.value.response.status_code == 503
    c = await make_node("c")
    with pytest.raises(ConnectFailedError, match="503"):
        await c.connect(b.address)
    assert b.stats().rejected_busy == 2
    await pending.close()
    await wait_for(lambda: _slots(b) == 1)
    assert (await c.connect(b.address)).proven


async def test_simultaneous_upgrades_cannot_overshoot_the_limit(make_node):
    b = await make_node("b", max_conns=3, handshake_timeout=3.0)
    results = await asyncio.gather(*(raw_ws(b.url) for _ in range(12)), return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InvalidStatus)]
    assert len(opened) == 3 and len(refused) == 9
    assert all(r.response.status_code == 503 for r in refused)
    await asyncio.gather(*(ws.close() for ws in opened))


async def test_foreign_origin_is_refused_and_missing_origin_allowed(make_node):
    b = await make_node("b")
    with pytest.raises(InvalidStatus) as refused:
        await raw_ws(b.url, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    for origin in ("http://localhost:3000", "http://127.0.0.1", "http://[::1]:8080"):
        ws = await raw_ws(b.url, origin=origin)
        await ws.close()
    ws = await raw_ws(b.url)  # no Origin header at all
    await ws.close()
    assert b.stats().rejected_origin == 1


async def test_wrong_path_is_404(make_node):
    b = await make_node("b")
    with pytest.raises(InvalidStatus) as refused:
        await raw_ws(f"ws://{b.address}/elsewhere")
    assert refused.value.response.status_code == 404


async def test_oversized_frame_closes_the_connection(make_node):
    b = await make_node("b", max_message_size=4096)
    peer = await RawPeer.connect(b.url)
    await peer.send(peer.message("proof"))
    await wait_for(lambda: b.connected_peers == 1)
    await peer.ws.send(b"\0" * 5000)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(peer.ws.recv(), 3)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await wait_for(lambda: b.connected_peers == 0)


async def test_oversized_frame_during_the_handshake_closes_too(make_node):
    b = await make_node("b", max_message_size=4096)
    ws = await raw_ws(b.url)
    await ws.send("x" * 5000)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_handshake_that_never_arrives_is_cut_at_the_timeout(make_node):
    b = await make_node("b", handshake_timeout=0.5)
    ws = await raw_ws(b.url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert 0.4 < loop.time() - started < 3
    assert b.stats().handshakes_failed == 1


async def test_initiator_gives_up_when_the_ack_never_comes(make_node):
    # a WebSocket server that upgrades and then says nothing
    from websockets.asyncio.server import serve

    async def silent(ws):
        await asyncio.sleep(10)

    async with serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        a = await make_node("a", handshake_timeout=0.5)
        with pytest.raises(HandshakeTimeout):
            await a.connect(f"127.0.0.1:{port}")
        server.close()


async def test_bad_handshake_json_is_a_protocol_error_close(make_node):
    b = await make_node("b")
    ws = await raw_ws(b.url)
    await ws.send("not json", text=True)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd.code == 1002


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_with_a_generated_certificate(make_node, tmp_path):
    cert_path, key_path = make_certificate(tmp_path)

    inbox = Inbox()
    b = await make_node("b", handler=inbox, tls_cert_path=str(cert_path), tls_key_path=str(key_path))
    assert b.url.startswith("wss://")
    a = await make_node("a", tls_ca_path=str(cert_path))
    conn = await a.connect(b.url)
    await conn.send(Message.new("over_tls", a.node.node_id, conn.peer_id, {"secret": 1}))
    assert (await inbox.get()).type == "over_tls"
    tls = conn._ws.transport.get_extra_info("ssl_object")
    assert tls.version() in ("TLSv1.2", "TLSv1.3")

    # an untrusted certificate is refused unless verification is off
    c = await make_node("c")
    with pytest.raises(ConnectFailedError):
        await c.connect(b.url)
    d = await make_node("d", tls_verify=False)
    assert (await d.connect(b.url)).proven

    # TLS 1.1 and older are refused by the server
    import ssl
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
    except ValueError:
        # A client OpenSSL built without TLS 1.0/1.1 cannot offer them at all,
        # so it cannot test the server's refusal; the checks above still ran.
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, OSError, ConnectionClosed)):
        await raw_ws(b.url, ssl=old)


async def test_no_permessage_deflate_is_negotiated(make_node):
    b = await make_node("b")
    ws = await connect(b.url, ping_interval=None, proxy=None)  # offers deflate by default
    assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
    await ws.close()
