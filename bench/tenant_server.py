"""A lean tenant fleet for the bench: `GET /t/{slug}/buildinfo` answers `{"git_sha": SHA}` after a
fixed latency, on plain asyncio protocols (no framework), so the server is never the bottleneck.

    python -m bench.tenant_server --latency 0.05 [--hosts 127.1.0.1,127.1.0.2 --cert C --key K]

Prints the port on stdout once listening; serves until killed. HTTP/1.1 keep-alive; with --cert
it speaks TLS on every host in --hosts (one listening socket each: distinct origins).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys

SHA = "c" * 40
BODY = json.dumps({"git_sha": SHA}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


class Tenant(asyncio.Protocol):
    latency = 0.05

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:  # pipelining-safe: one answer per request head
            _head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.loop.call_later(self.latency, self._answer)

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def serve(latency: float, hosts: list[str], port: int, tls: ssl.SSLContext | None) -> None:
    Tenant.latency = latency
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Tenant, host=hosts, port=port, ssl=tls, backlog=4096, reuse_address=True)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--hosts", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    try:
        asyncio.run(serve(args.latency, args.hosts.split(","), args.port, tls))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
