import asyncio

from smsgnet import Message, NodeManager, PeerConnection, Transport, TransportConfig


async def main() -> None:
    config = TransportConfig(listen_addr="127.0.0.1:0")  # port 0: any free port
    alice = Transport(NodeManager.generate("alice"), config=config)
    bob = Transport(NodeManager.generate("bob"), config=config)
    answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    @bob.on_message  # bob answers every message with a greeting
    async def bob_handler(conn: PeerConnection, msg: Message) -> None:
        await conn.send(msg.reply("greeting", {"hello": msg.payload["name"]}))

    alice.on_message(lambda conn, msg: answer.set_result(msg))

    async with alice, bob:
        conn = await alice.connect(bob.address)  # handshake: bob proves his key
        await conn.send(Message.new("introduce", alice.node.node_id, conn.peer_id, {"name": "alice"}))
        reply = await asyncio.wait_for(answer, timeout=5)
        print(f"alice got {reply.type} {reply.payload} from {conn.identity.name}")


if __name__ == "__main__":
    asyncio.run(main())
