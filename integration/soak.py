#!/usr/bin/env python3
"""Connection churn against a running frontgate, for integration/soak (loopback only).

  backend --listen 127.0.0.1:P
        The routes' backend: reads whatever the client sends first, answers 16 KiB, closes
        after the client's EOF (a stand-in for the fronted site and the routed service).
  dc --listen 127.0.0.1:P
        The fake Telegram DC: reads the proxy's 64-byte obfuscated2 init, then sends 16 KiB
        and closes after the proxy's EOF. It needs no keys: nothing here checks the payload,
        only that the session is set up, moves bytes and is torn down.
  churn --connect 127.0.0.1:P --metrics 127.0.0.1:M --pid PID --seconds S --secret HEX
        --mtproto-sni NAME --routed-sni NAME [--concurrency N]
        Runs S seconds of mixed connections with N in flight: routed hellos, MTProto fake-TLS
        sessions (valid digest for HEX), fronted probes (the MTProto route's name with a
        wrong digest), garbage first bytes and slow hellos that never finish. Every minute
        it prints frontgate's RSS (from /proc/PID/status) and `frontgate_connections_open`;
        at the end it waits for the gauge to return to 0 and prints one JSON summary line.

The fake-TLS hello is TDLib 1.8.66's recorded hello (tests/data/tdlib), re-signed for HEX at
the current time (PROTOCOL.md §2); the obfuscated2 init is built as PROTOCOL.md §5 says (both in faketls_client.py).
"""

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
import urllib.request
from pathlib import Path

from faketls_client import load_hello, obfuscated2_init, sign_hello, tls_record

from bench_tools import client_hello

ROOT = Path(__file__).resolve().parent.parent
ANSWER = os.urandom(16 * 1024)
KINDS = ("routed", "mtproto", "fronted", "garbage", "slow")


def addr(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def serve_answer(reader, writer, first):
    """Reads `first` bytes (or what comes), sends ANSWER, waits for EOF, closes."""
    try:
        await asyncio.wait_for(reader.read(first), 30)
        writer.write(ANSWER)
        await writer.drain()
        while await asyncio.wait_for(reader.read(65536), 60):
            pass
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()


async def backend(args):
    server = await asyncio.start_server(
        lambda r, w: serve_answer(r, w, 65536), *addr(args.listen), backlog=1024
    )
    await server.serve_forever()


async def dc(args):
    async def one(reader, writer):
        try:
            await asyncio.wait_for(reader.readexactly(64), 30)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            writer.close()
            return
        await serve_answer(reader, writer, 0)

    server = await asyncio.start_server(one, *addr(args.listen), backlog=1024)
    await server.serve_forever()


TEMPLATE = load_hello(ROOT / "tests/data/tdlib/client-hello-tdlib-1.8.66.json")


def signed_hello(secret, valid=True):
    """TDLib's hello with a fresh digest for `secret` at the current time (or a wrong one)."""
    record, _ = sign_hello(TEMPLATE, secret)
    if valid:
        return record
    record = bytearray(record)
    record[11] ^= 0x55
    return bytes(record)


async def read_records_until_data(reader):
    """Reads the fake server flight: records up to and including the first application data."""
    while True:
        head = await reader.readexactly(5)
        body_len = int.from_bytes(head[3:5], "big")
        await reader.readexactly(body_len)
        if head[0] == 0x17:
            return


async def relayed(target, hello):
    """A hello the gateway forwards to the backend: the backend's answer comes back whole."""
    reader, writer = await asyncio.open_connection(*target)
    writer.write(hello)
    await writer.drain()
    await reader.readexactly(len(ANSWER))
    writer.write_eof()
    await reader.read()
    writer.close()


async def routed(target, opts):
    await relayed(target, opts.routed_hello)


async def fronted(target, opts):
    await relayed(target, signed_hello(opts.secret, valid=False))


async def mtproto(target, opts):
    reader, writer = await asyncio.open_connection(*target)
    writer.write(signed_hello(opts.secret))
    await writer.drain()
    await read_records_until_data(reader)
    payload = obfuscated2_init(opts.secret) + os.urandom(1024)
    writer.write(b"\x14\x03\x03\x00\x01\x01" + tls_record(payload))
    await writer.drain()
    got = 0
    while got < len(ANSWER):
        head = await reader.readexactly(5)
        got += len(await reader.readexactly(int.from_bytes(head[3:5], "big")))
    writer.write_eof()
    await reader.read()
    writer.close()


async def garbage(target, opts):
    reader, writer = await asyncio.open_connection(*target)
    writer.write(os.urandom(random.randint(1, 600)))
    await writer.drain()
    writer.write_eof()
    await reader.read()
    writer.close()


async def slow(target, opts):
    """Half a hello, then silence until frontgate's client_hello timeout closes it."""
    reader, writer = await asyncio.open_connection(*target)
    writer.write(opts.routed_hello[: len(opts.routed_hello) // 2])
    await writer.drain()
    await asyncio.wait_for(reader.read(), 60)
    writer.close()


def rss_kib(pid):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))


def open_gauge(metrics):
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = re.search(r"^frontgate_connections_open (\d+)", text, re.M)
    return int(found.group(1)) if found else -1


async def churn(args):
    target = addr(args.connect)
    args.secret = bytes.fromhex(args.secret)
    args.routed_hello = client_hello(args.routed_sni)
    runners = {
        "routed": routed,
        "mtproto": mtproto,
        "fronted": fronted,
        "garbage": garbage,
        "slow": slow,
    }
    done = {k: 0 for k in KINDS}
    failed = {k: 0 for k in KINDS}
    deadline = time.monotonic() + args.seconds
    samples = []

    async def worker():
        while time.monotonic() < deadline:
            kind = random.choices(KINDS, weights=(30, 30, 20, 15, 5))[0]
            try:
                await asyncio.wait_for(runners[kind](target, args), 60)
                done[kind] += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                failed[kind] += 1

    async def sampler():
        minute = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(min(60, max(0, deadline - time.monotonic())))
            minute += 1
            sample = {
                "minute": minute,
                "rss_kib": rss_kib(args.pid),
                "open": open_gauge(args.metrics),
                "done": sum(done.values()),
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)

    await asyncio.gather(sampler(), *(worker() for _ in range(args.concurrency)))
    settle = time.monotonic() + 30
    final_open = open_gauge(args.metrics)
    while final_open != 0 and time.monotonic() < settle:
        await asyncio.sleep(0.5)
        final_open = open_gauge(args.metrics)
    warm = [s["rss_kib"] for s in samples[args.warmup_minutes :]] or [s["rss_kib"] for s in samples]
    summary = {
        "done": done,
        "failed": failed,
        "final_open": final_open,
        "rss_after_warmup_min_kib": min(warm),
        "rss_after_warmup_max_kib": max(warm),
        "rss_spread_pct": round(100.0 * (max(warm) - min(warm)) / min(warm), 1),
        "samples": samples,
    }
    print(json.dumps({"summary": summary}), flush=True)
    ok = final_open == 0 and summary["rss_spread_pct"] <= 10.0
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("backend", "dc"):
        sub.add_parser(name).add_argument("--listen", required=True)
    c = sub.add_parser("churn")
    c.add_argument("--connect", required=True)
    c.add_argument("--metrics", required=True)
    c.add_argument("--pid", type=int, required=True)
    c.add_argument("--seconds", type=int, required=True)
    c.add_argument("--secret", required=True)
    c.add_argument("--mtproto-sni", required=True)
    c.add_argument("--routed-sni", required=True)
    c.add_argument("--concurrency", type=int, default=32)
    c.add_argument("--warmup-minutes", type=int, default=5)
    args = parser.parse_args()
    if args.cmd == "backend":
        asyncio.run(backend(args))
    elif args.cmd == "dc":
        asyncio.run(dc(args))
    else:
        sys.exit(asyncio.run(churn(args)))


if __name__ == "__main__":
    main()
