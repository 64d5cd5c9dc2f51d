#!/usr/bin/env python3
"""Load tools for integration/bench-relay (standard library only, loopback only).

  sink  --listen 127.0.0.1:P --bytes N
        A raw TCP backend: per connection, reads the client's first flight (a ClientHello),
        then sends N bytes and closes. No TLS on either end, so a bulk run through a router
        measures the router's copy loop, not the endpoints' crypto.
  pull  --connect 127.0.0.1:P --sni NAME --bytes N
        The matching client: sends a real ClientHello for NAME (so the router parses it and
        routes by SNI), reads N bytes, prints `bytes seconds bytes_per_second`.
  hold  --connect 127.0.0.1:P --sni NAME --cafile CA --count N [--ready FILE]
        Opens N TLS connections (full handshakes through the router to the TLS backend) and
        holds them idle until SIGTERM; a failed attempt is retried (--retries, default 3);
        writes `established E failed_attempts F` to FILE (or stdout) once all are done.
"""

import argparse
import asyncio
import resource
import signal
import socket
import ssl
import sys
import threading
import time

CHUNK = 1 << 20


def addr(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def client_hello(sni):
    """The bytes of a real ClientHello for `sni` (None: a hello without SNI), produced by
    OpenSSL through a memory BIO."""
    ctx = ssl.create_default_context()
    if sni is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def read_first_flight(conn):
    """Reads one TLS record (the ClientHello) so the router has finished its peek."""
    head = b""
    while len(head) < 5:
        part = conn.recv(5 - len(head))
        if not part:
            return False
        head += part
    need = int.from_bytes(head[3:5], "big")
    while need:
        part = conn.recv(min(need, 65536))
        if not part:
            return False
        need -= len(part)
    return True


def sink(args):
    host, port = addr(args.listen)
    payload = memoryview(bytes(CHUNK))
    srv = socket.create_server((host, port), backlog=1024, reuse_port=False)

    def serve(conn):
        with conn:
            try:
                if not read_first_flight(conn):
                    return
                left = args.bytes
                while left > 0:
                    n = min(left, CHUNK)
                    conn.sendall(payload[:n])
                    left -= n
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)  # wait for the client to close first (no RST on unread data)
            except OSError:
                pass

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def pull(args):
    host, port = addr(args.connect)
    hello = client_hello(args.sni)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start = time.perf_counter()
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.sendall(hello)
        got = 0
        while got < args.bytes:
            n = s.recv_into(view)
            if n == 0:
                break
            got += n
    elapsed = time.perf_counter() - start
    print(f"{got} {elapsed:.3f} {got / elapsed:.0f}")
    return 0 if got == args.bytes else 1


async def hold(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = addr(args.connect)
    ctx = ssl.create_default_context(cafile=args.cafile)
    gate = asyncio.Semaphore(args.parallel)
    held = []
    failures = []

    async def one():
        async with gate:
            for _ in range(1 + args.retries):
                try:
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port, ssl=ctx, server_hostname=args.sni), 30
                    )
                    held.append(writer)
                    return
                except Exception as e:  # noqa: BLE001 - counted and reported
                    failures.append(repr(e))

    await asyncio.gather(*(one() for _ in range(args.count)))
    line = f"established {len(held)} failed_attempts {len(failures)}"
    if failures:
        line += f" first_error {failures[0]}"
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(line + "\n")
    else:
        print(line, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for w in held:
        w.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--listen", required=True)
    s.add_argument("--bytes", type=int, required=True)
    c = sub.add_parser("pull")
    c.add_argument("--connect", required=True)
    c.add_argument("--sni", required=True)
    c.add_argument("--bytes", type=int, required=True)
    h = sub.add_parser("hold")
    h.add_argument("--connect", required=True)
    h.add_argument("--sni", required=True)
    h.add_argument("--cafile", required=True)
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--parallel", type=int, default=64)
    h.add_argument("--retries", type=int, default=3, help="new attempts after a failed one")
    h.add_argument("--ready")
    args = p.parse_args()
    if args.cmd == "sink":
        sink(args)
    elif args.cmd == "pull":
        sys.exit(pull(args))
    else:
        asyncio.run(hold(args))


if __name__ == "__main__":
    main()
