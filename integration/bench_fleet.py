"""The client half of integration/bench-fleet: how long a valid MTProto hello waits for its
decision, measured from outside.

  hellos --connect HOST:PORT --secret HEX --count N
      N connections, one after another: each sends TDLib 1.8.66's recorded hello
      (tests/data/tdlib), freshly signed for HEX, and times from the send to the first byte of
      the answer. The route has `mimic: off`, so the fake flight leaves as soon as the hello
      is decided (digest, freshness, replay cache: locally, or locally and in Redis): the time
      is the decision plus one loopback round trip. Every answer must be the fake flight
      (16 03 03 with a verifying server digest); a fronted hello is counted as an error.
      Prints JSON: {"count", "errors", "p50_ms", "p99_ms"}.
"""

import argparse
import json
import pathlib
import socket
import sys
import time

from faketls_client import load_hello, sign_hello, verify_flight

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = load_hello(ROOT / "tests/data/tdlib/client-hello-tdlib-1.8.66.json")


def addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def recv_exact(conn, n, data=b""):
    """`data` extended with bytes from `conn` to `n` bytes; shorter at EOF."""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            break
        data += more
    return data


def one_hello(target, secret):
    """Seconds from sending a fresh hello to the answer's first byte; None if the answer is
    not the fake flight (a fronted hello gets the site's answer instead)."""
    record, random = sign_hello(TEMPLATE, secret)
    with socket.create_connection(target, timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        conn.sendall(record)
        first = conn.recv(65536)
        took = time.perf_counter() - started
        # The flight: ServerHello record, then CCS (6 bytes) and one application data record.
        data = recv_exact(conn, 5, first)
        if data[:3] != b"\x16\x03\x03":
            return None
        app_at = 5 + int.from_bytes(data[3:5], "big") + 6
        data = recv_exact(conn, app_at + 5, data)
        data = recv_exact(conn, app_at + 5 + int.from_bytes(data[app_at + 3 : app_at + 5], "big"), data)
        ok, _, _ = verify_flight(data, secret, random)
        return took if ok else None


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def hellos(args):
    target, secret = addr(args.connect), bytes.fromhex(args.secret)
    times, errors = [], 0
    for _ in range(args.count):
        took = one_hello(target, secret)
        if took is None:
            errors += 1
        else:
            times.append(took * 1000)
    result = {"count": len(times), "errors": errors}
    if times:
        result["p50_ms"] = round(percentile(times, 50), 3)
        result["p99_ms"] = round(percentile(times, 99), 3)
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("hellos")
    p.add_argument("--connect", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--count", type=int, default=2000)
    p.set_defaults(run=hellos)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
