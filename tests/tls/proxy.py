"""A TLS front for a plain Kafka-protocol broker (tansu has no TLS listener): terminates TLS,
optionally requires a client certificate signed by CLIENT_CA, and forwards the bytes.

usage: proxy.py LISTEN_PORT TARGET_HOST:PORT CERT KEY [CLIENT_CA]
Prints "ready" once listening, and one line per TLS connection with the client's CN.
"""
import asyncio
import ssl
import sys

listen_port, target, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
client_ca = sys.argv[5] if len(sys.argv) > 5 else None
target_host, target_port = target.rsplit(":", 1)


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    peer = client_writer.get_extra_info("peercert") or {}
    subject = dict(x[0] for x in peer.get("subject", ()))
    print(f"tls connection: client {subject.get('commonName', '-')} {client_writer.get_extra_info('ssl_object').version()}", flush=True)
    broker_reader, broker_writer = await asyncio.open_connection(target_host, int(target_port))
    await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer), return_exceptions=True)


async def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, ssl=context)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
