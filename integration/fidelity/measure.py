#!/usr/bin/env python3
"""The measuring half of integration/fidelity.sh (loopback only).

  measure.py dc --listen 127.0.0.1:P --bytes N
        A fake Telegram DC: reads the proxy's 64-byte obfuscated2 init, sends N bytes, closes.
        Nothing here decrypts: only the TLS record sizes frontgate wraps them in are looked at.
  measure.py telethon-hello --secret HEX --domain D --out FILE.json
        The ClientHello TelethonFakeTLS's codec builds for the ee-secret (HEX, D), written like
        the vectors in tests/data (`full`: base64 of the record).
  measure.py run --frontgate 127.0.0.1:P --backend 127.0.0.1:P --secret HEX
        --hello NAME=FILE.json ... --tries N --out RESULT.json
        [--download-bytes B] [--backend-download PATH] [--quiet-ms 200]
        For each hello, in the order given: one capture pair (the hello, re-signed for HEX now,
        through frontgate: the fake flight the client gets; the SAME bytes straight to the
        backend: what a prober's replay gets; and the same bytes again through frontgate:
        the replay as a prober really sends it), then N timing tries (time from the hello's
        last byte written to the first byte read, and the flight's bytes: each side, a fresh
        hello per try; a backend's flight ends after --try-quiet-ms of silence). Then one
        download of B bytes through frontgate (fake-TLS handshake, obfuscated2 init, the fake
        DC sends B bytes) and, with --backend-download, one HTTPS GET of PATH from the backend
        with Python's ssl over a MemoryBIO; both histogram the TLS records read off the socket.
        Also, once with the first hello, what frontgate sends after the fake flight to a client
        that half-closes, and to one whose first record is no obfuscated2 init.
        Writes everything to RESULT.json for report.py.
"""

import argparse
import base64
import collections
import json
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faketls_client import (  # noqa: E402  (integration/faketls_client.py)
    CCS,
    load_hello,
    obfuscated2_init,
    parse_client_hello,
    sign_hello,
    tls_record,
    verify_flight,
)

CONNECT_TIMEOUT = 5
READ_LIMIT = 64 * 1024


def addr(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------- parsing what came back


def records(data):
    """(type, payload length) of each whole record, and the number of trailing bytes."""
    out, at = [], 0
    while at + 5 <= len(data):
        n = int.from_bytes(data[at + 3 : at + 5], "big")
        if at + 5 + n > len(data):
            break
        out.append((data[at], n))
        at += 5 + n
    return out, len(data) - at


def server_hello(data):
    """The ServerHello fields a prober compares, or None."""
    if len(data) < 9 or data[0] != 0x16 or data[5] != 0x02:
        return None
    try:
        b = data
        rec_len = int.from_bytes(b[3:5], "big")
        at = 9
        legacy = int.from_bytes(b[at : at + 2], "big")
        at += 2 + 32
        sid = b[at + 1 : at + 1 + b[at]]
        at += 1 + b[at]
        cipher = int.from_bytes(b[at : at + 2], "big")
        at += 3
        end = at + 2 + int.from_bytes(b[at : at + 2], "big")
        at += 2
        exts, version, key_share = [], legacy, None
        while at + 4 <= end:
            kind = int.from_bytes(b[at : at + 2], "big")
            n = int.from_bytes(b[at + 2 : at + 4], "big")
            ext = b[at + 4 : at + 4 + n]
            exts.append(kind)
            if kind == 0x002B and n == 2:
                version = int.from_bytes(ext, "big")
            elif kind == 0x0033 and n >= 4:
                key_share = [int.from_bytes(ext[:2], "big"), int.from_bytes(ext[2:4], "big")]
            at += 4 + n
    except IndexError:
        return None
    return {
        "record_version": int.from_bytes(data[1:3], "big"),
        "record_len": 5 + rec_len,
        "legacy_version": legacy,
        "version": version,
        "cipher": cipher,
        "extensions": exts,
        "key_share": key_share,
        "session_id": sid.hex(),
        "ja3s": f"{legacy},{cipher},{'-'.join(str(e) for e in exts)}",
    }


def analyze(data, client_session_id=None):
    recs, trailing = records(data)
    sh = server_hello(data)
    if sh is not None and client_session_id is not None:
        sh["session_id_echoed"] = sh["session_id"] == client_session_id.hex()
    return {
        "bytes": len(data),
        "records": recs,
        "trailing": trailing,
        "server_hello": sh,
        "head": data[:16].hex(),
    }


# ---------------------------------------------------------------- I/O


def connect(target):
    s = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_quiet(s, quiet, limit_s=5.0, until=None, stop=False, t0=None):
    """Reads until `quiet` seconds pass without a byte (or EOF, or limit_s). With `until`, a
    callable on the bytes so far, the quiet window only starts once it is true (with `stop`,
    reading ends right then). Returns (bytes, seconds from `t0` (a perf_counter value taken
    before the request was written; default: the call) to the first byte or None, how it
    ended)."""
    got, first = b"", None
    t0 = time.perf_counter() if t0 is None else t0
    deadline = t0 + limit_s
    while True:
        now = time.perf_counter()
        if now >= deadline:
            return got, first, "limit"
        waiting_for_more = until is not None and not until(got)
        if stop and until is not None and not waiting_for_more:
            return got, first, "complete"
        s.settimeout(min(deadline - now, quiet) if not waiting_for_more else deadline - now)
        try:
            part = s.recv(READ_LIMIT)
        except socket.timeout:
            if waiting_for_more:
                return got, first, "limit"
            return got, first, "quiet"
        except ConnectionError as e:
            return got, first, f"error: {e}"
        if not part:
            return got, first, "eof"
        if first is None:
            first = time.perf_counter() - t0
        got += part


def flight_complete(data):
    """A fake flight is in: a record with data after the ServerHello and the CCS."""
    recs, _ = records(data)
    return len(recs) >= 3 and recs[2][0] == 0x17


def exchange(target, hello, quiet, fake=False):
    s = connect(target)
    try:
        t0 = time.perf_counter()
        s.sendall(hello)
        data, first, how = read_quiet(s, quiet, until=flight_complete if fake else None, t0=t0)
    finally:
        s.close()
    return data, first, how


def timed(target, hello, quiet, fake=False):
    """(seconds from the hello written to the first byte read or None, flight bytes): a fake
    flight is read up to its data record, a backend's until `quiet` seconds pass."""
    s = connect(target)
    try:
        t0 = time.perf_counter()
        s.sendall(hello)
        data, first, _ = read_quiet(s, quiet, until=flight_complete if fake else None, stop=fake,
                                    t0=t0)
        return first, len(data)
    except OSError:
        return None, 0
    finally:
        s.close()


class RecordCounter:
    """Counts the whole records of a byte stream read off a socket."""

    def __init__(self):
        self.buf = b""
        self.sizes = collections.Counter()  # (type, payload length) -> count
        self.payload = 0
        self.first = []  # the first few (type, payload length), in order

    def feed(self, data, count=True):
        self.buf += data
        at = 0
        while at + 5 <= len(self.buf):
            n = int.from_bytes(self.buf[at + 3 : at + 5], "big")
            if at + 5 + n > len(self.buf):
                break
            if count:
                self.sizes[(self.buf[at], n)] += 1
                if len(self.first) < 8:
                    self.first.append([self.buf[at], n])
                if self.buf[at] == 0x17:
                    self.payload += n
            at += 5 + n
        self.buf = self.buf[at:]

    def summary(self):
        return {
            "records": sum(self.sizes.values()),
            "first": self.first,
            "sizes": sorted([[t, n, c] for (t, n), c in self.sizes.items()], key=lambda x: -x[2]),
        }


def fake_download(target, template, secret, nbytes, limit_s=120):
    """The fake-TLS handshake and obfuscated2 init through frontgate, then records until
    `nbytes` of payload have come (the fake DC sends exactly that many)."""
    hello, random = sign_hello(template, secret)
    s = connect(target)
    t0 = time.perf_counter()
    try:
        s.sendall(hello)
        data, _, _ = read_quiet(s, 0.05, until=flight_complete)
        ok, why, end = verify_flight(data, secret, random)
        if not ok:
            return {"error": f"flight: {why}"}
        counter = RecordCounter()
        counter.feed(data[end:])
        s.sendall(CCS + tls_record(obfuscated2_init(secret)))
        s.settimeout(10)
        deadline = time.perf_counter() + limit_s
        while counter.payload < nbytes and time.perf_counter() < deadline:
            part = s.recv(1 << 18)
            if not part:
                break
            counter.feed(part)
        out = counter.summary()
        out.update(payload=counter.payload, seconds=round(time.perf_counter() - t0, 3))
        if counter.payload < nbytes:
            out["error"] = f"got {counter.payload} of {nbytes} bytes"
        return out
    except (OSError, socket.timeout) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        s.close()


def tls_download(target, sni, path, nbytes, limit_s=120):
    """A real TLS client (Python's ssl on a MemoryBIO, so the raw records are seen) GETs
    `path`; histogram of the records that come after the request."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    s = connect(target)
    s.settimeout(10)
    counter = RecordCounter()
    t0 = time.perf_counter()
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    s.sendall(pending)
                part = s.recv(1 << 16)
                if not part:
                    return {"error": "EOF in the handshake"}
                counter.feed(part, count=False)
                incoming.write(part)
        version = tls.version()
        tls.write(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        s.sendall(outgoing.read())
        body, head, length = 0, b"", None
        deadline = time.perf_counter() + limit_s
        done = False
        while not done and time.perf_counter() < deadline:
            part = s.recv(1 << 18)
            if not part:
                break
            counter.feed(part)
            incoming.write(part)
            while True:
                try:
                    chunk = tls.read(1 << 18)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    done = True
                    break
                if not chunk:
                    done = True
                    break
                if length is None:
                    head += chunk
                    if b"\r\n\r\n" in head:
                        h, _, rest = head.partition(b"\r\n\r\n")
                        for line in h.split(b"\r\n"):
                            if line.lower().startswith(b"content-length:"):
                                length = int(line.split(b":")[1])
                        body = len(rest)
                        length = length if length is not None else -1
                else:
                    body += len(chunk)
            pending = outgoing.read()
            if pending:
                s.sendall(pending)
            if length is not None and 0 <= length <= body:
                done = True
        out = counter.summary()
        out.update(version=version, body=body, seconds=round(time.perf_counter() - t0, 3))
        if body < nbytes:
            out["error"] = f"got {body} of {nbytes} body bytes"
        return out
    except (OSError, ssl.SSLError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        s.close()


# ---------------------------------------------------------------- subcommands


def cmd_dc(args):
    chunk = os.urandom(1 << 16)

    def one(conn):
        try:
            conn.settimeout(30)
            got = b""
            while len(got) < 64:
                part = conn.recv(64 - len(got))
                if not part:
                    return
                got += part
            left = args.bytes
            while left > 0:
                n = min(left, len(chunk))
                conn.sendall(chunk[:n])
                left -= n
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1 << 16):
                pass
        except OSError:
            pass
        finally:
            conn.close()

    srv = socket.create_server(addr(args.listen), backlog=128)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def cmd_telethon_hello(args):
    from TelethonFakeTLS.FakeTLS import MTProxyFakeTLSClientCodec

    codec = MTProxyFakeTLSClientCodec(args.secret + args.domain.encode().hex())
    record = codec.build_new_client_hello_packet()
    doc = {
        "client": "TelethonFakeTLS (MTProxyFakeTLSClientCodec.build_new_client_hello_packet)",
        "sni": args.domain,
        "time": int(time.time()),
        "full": base64.b64encode(record).decode(),
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def cmd_run(args):
    fg, be = addr(args.frontgate), addr(args.backend)
    secret = bytes.fromhex(args.secret)
    quiet = args.quiet_ms / 1000
    result = {"hellos": [], "errors": []}
    templates = []
    for spec in args.hello:
        name, _, path = spec.partition("=")
        templates.append((name, load_hello(path)))
    for name, template in templates:
        info = parse_client_hello(template)
        entry = {
            "name": name,
            "hello_bytes": len(template),
            "sni": info["sni"],
            "offered_groups": info["groups"],
            "offered_key_shares": info["key_share_groups"],
        }
        try:
            hello, random = sign_hello(template, secret)
            sid = parse_client_hello(hello)["session_id"]
            data, first, how = exchange(fg, hello, quiet, fake=True)
            ok, why, end = verify_flight(data, secret, random)
            entry["frontgate"] = analyze(data, sid)
            entry["frontgate"].update(first_ms=first and first * 1e3, ended=how, verified=ok,
                                      why=why, after_flight=len(data) - end if ok else None)
            data, first, how = exchange(be, hello, quiet)
            entry["backend"] = analyze(data, sid)
            entry["backend"].update(first_ms=first and first * 1e3, ended=how)
            data, first, how = exchange(fg, hello, quiet)
            entry["replay"] = analyze(data, sid)
            entry["replay"].update(first_ms=first and first * 1e3, ended=how)
            times = {"backend": [], "frontgate": [], "replay": []}
            sizes = {"backend": [], "frontgate": [], "replay": []}
            for _ in range(args.tries):
                hello, _ = sign_hello(template, secret)
                for side, target, fake in (("frontgate", fg, True), ("replay", fg, False),
                                           ("backend", be, False)):
                    t, n = timed(target, hello, args.try_quiet_ms / 1000, fake)
                    times[side].append(t)
                    sizes[side].append(n)
            entry["ttfb_ms"] = {
                k: (median(v) * 1e3 if median(v) is not None else None) for k, v in times.items()
            }
            entry["ttfb_missing"] = {k: sum(x is None for x in v) for k, v in times.items()}
            entry["flight_sizes"] = sizes
        except OSError as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        result["hellos"].append(entry)
        print(f"# {args.label} {name}: done", file=sys.stderr, flush=True)
    # What follows the fake flight when the client does not go on as a Telegram client:
    # a half-close, or a record whose first 64 bytes are no obfuscated2 init for the secret.
    name, template = templates[0]
    result["after_flight"] = {"hello": name}
    for how in ("half-close", "bad init"):
        try:
            hello, random = sign_hello(template, secret)
            s = connect(fg)
            try:
                s.sendall(hello)
                data, _, _ = read_quiet(s, quiet, until=flight_complete, stop=True)
                ok, _, end = verify_flight(data, secret, random)
                if how == "half-close":
                    s.shutdown(socket.SHUT_WR)
                else:
                    s.sendall(CCS + tls_record(os.urandom(64)))
                more, _, ended = read_quiet(s, 0.3)
                more = data[end:] + more
            finally:
                s.close()
            result["after_flight"][how] = {
                "flight_ok": ok, "bytes": len(more), "records": records(more)[0][:8],
                "head": more[:16].hex(), "ended": ended,
                "server_hello": (server_hello(more) or {}).get("ja3s"),
            }
        except OSError as e:
            result["after_flight"][how] = {"error": f"{type(e).__name__}: {e}"}
    if args.download_bytes:
        result["download"] = {"hello": name}
        result["download"]["frontgate"] = fake_download(fg, template, secret, args.download_bytes)
        if args.backend_download:
            sni = parse_client_hello(template)["sni"]
            result["download"]["backend"] = tls_download(
                be, sni, args.backend_download, args.download_bytes
            )
    result["label"] = args.label
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dc")
    d.add_argument("--listen", required=True)
    d.add_argument("--bytes", type=int, default=16 << 20)
    t = sub.add_parser("telethon-hello")
    t.add_argument("--secret", required=True)
    t.add_argument("--domain", required=True)
    t.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--frontgate", required=True)
    r.add_argument("--backend", required=True)
    r.add_argument("--secret", required=True)
    r.add_argument("--hello", action="append", required=True)
    r.add_argument("--tries", type=int, default=10)
    r.add_argument("--out", required=True)
    r.add_argument("--label", default="")
    r.add_argument("--download-bytes", type=int, default=0)
    r.add_argument("--backend-download")
    r.add_argument("--quiet-ms", type=int, default=200)
    r.add_argument("--try-quiet-ms", type=int, default=30)
    args = parser.parse_args()
    {"dc": cmd_dc, "telethon-hello": cmd_telethon_hello, "run": cmd_run}[args.cmd](args)


if __name__ == "__main__":
    main()
