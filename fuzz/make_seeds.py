#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into tests/data/fuzz/<target>/.

The seeds are real inputs: the mtg and TDLib ClientHellos and the mtg obfuscated2 frames from
the shared test vectors (decoded into raw bytes), routes.example.yaml, and hand-made PROXY
headers, record streams and secret spellings. The files are committed; run this only to
rebuild them (`python3 fuzz/make_seeds.py [path/to/shared/testdata]`). The input layout of
each target is described in tests/common/fuzz_harness.rs.
"""

import base64
import json
import pathlib
import shutil
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The vectors sit in shared/ beside the checkout (or beside the worktrees' folder).
VECTORS = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else next(
    (p for p in (ROOT.parent / "shared/testdata", ROOT.parent.parent / "shared/testdata") if p.is_dir()),
    ROOT.parent / "shared/testdata",
)
OUT = ROOT / "tests/data/fuzz"
MTG_SECRET = bytes.fromhex("367a189aee18fa31c190054efd4a8e95")
DOMAIN = b"storage.googleapis.com"


def b64(text):
    text = text.rstrip("=")
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text.replace("-", "+").replace("_", "/"))


def vector(rel):
    return json.loads((VECTORS / rel).read_text())


def write(target, name, data):
    path = OUT / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def mtg_licence(target):
    shutil.copy(VECTORS / "mtg/LICENSE", OUT / target / "LICENSE.mtg")


def segmented(sizes, payload, flags=0):
    """The harness's split_input layout: count byte (with flags), size-1 bytes, payload."""
    return bytes([len(sizes) | flags] + [s - 1 for s in sizes]) + payload


def split_records(record, size):
    """Re-frames a one-record ClientHello into records of at most `size` handshake bytes."""
    body = record[5:]
    out = b""
    for at in range(0, len(body), size):
        chunk = body[at : at + size]
        out += b"\x16\x03\x01" + struct.pack(">H", len(chunk)) + chunk
    return out


def hellos():
    mtg = {
        p.stem: vector(f"mtg/faketls/{p.name}")
        for p in sorted((VECTORS / "mtg/faketls").glob("*.json"))
    }
    tdlib = vector("tdlib/client-hello-tdlib-1.8.66.json")
    return mtg, tdlib


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    mtg, tdlib = hellos()
    ok = b64(mtg["client-hello-ok-19dfe38384b9884b"]["full"])
    grease = b64(mtg["client-hello-ok-grease-first"]["full"])
    bad = mtg["client-hello-bad-fa2e46cdb33e2a1b"]
    td = b64(tdlib["full"])

    # hello: one piece, TCP segments, several records, early data, not TLS.
    write("hello", "mtg-ok.bin", segmented([], ok))
    write("hello", "mtg-grease-first-segments.bin", segmented([1, 7, 256], grease))
    write("hello", "tdlib-1.8.66.bin", segmented([], td))
    write("hello", "tdlib-records-of-500.bin", segmented([], split_records(td, 500)))
    write("hello", "mtg-records-of-100-segments.bin", segmented([3, 200], split_records(ok, 100) + b"early"))
    write("hello", "tdlib-after-proxy-header.bin", segmented([100, 256], td, flags=0x08))
    write("hello", "http.bin", segmented([], b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))
    mtg_licence("hello")

    # faketls: now (u64 LE), skew seconds (u64 LE), record.
    def fake(now, skew, record):
        return struct.pack("<QQ", now, skew) + record

    for name in ["client-hello-ok-19dfe38384b9884b", "client-hello-ok-grease-first"]:
        v = mtg[name]
        write("faketls", f"{name}.bin", fake(v["time"], 600, b64(v["full"])))
    write("faketls", "client-hello-bad.bin", fake(bad["time"], 600, b64(bad["full"])))
    v = mtg["client-hello-ok-19dfe38384b9884b"]
    write("faketls", "clock-skew.bin", fake(v["time"] + 3600, 600, b64(v["full"])))
    write("faketls", "tdlib-1.8.66.bin", fake(tdlib["time"], 600, td))
    mtg_licence("faketls")

    # obfuscated2: 16-byte secret, 64-byte frame, then what the client sent after it.
    for p in sorted((VECTORS / "mtg/obfuscation").glob("*.json")):
        v = vector(f"mtg/obfuscation/{p.name}")
        write("obfuscated2", f"{p.stem}.bin", b64(v["secret"]) + b64(v["frame"]) + b64(v["decrypted"]["cipher"]))
    mtg_licence("obfuscated2")

    # records: optional ChangeCipherSpec, application-data records; whole and chunked.
    def record(kind, payload):
        return bytes([kind, 3, 3]) + struct.pack(">H", len(payload)) + payload

    stream = record(0x14, b"\x01") + record(0x17, b"abc" * 40) + record(0x17, b"") + record(0x17, bytes(range(256)) * 4)
    write("records", "ccs-and-data.bin", segmented([], stream))
    write("records", "ccs-and-data-chunked.bin", segmented([1, 5, 6, 200], stream))
    write("records", "alert-after-data.bin", segmented([2], record(0x17, b"ok") + record(0x15, b"\x02\x28")))
    # The largest accepted record's header, its body cut short.
    write("records", "largest-record-cut.bin", segmented([255], record(0x17, bytes(16640))[:300]))

    # secret: every accepted spelling, and near misses.
    hexs = MTG_SECRET.hex()
    ee = b"\xee" + MTG_SECRET + DOMAIN
    forms = {
        "hex": hexs,
        "hex-upper": hexs.upper(),
        "dd": "dd" + hexs,
        "ee-domain": "ee" + hexs + DOMAIN.hex(),
        "ee-bare": "ee" + hexs,
        "base64-url": base64.urlsafe_b64encode(ee).decode().rstrip("="),
        "base64-std-padded": base64.b64encode(b"\xee" + bytes([0xfb] * 16) + b"a.example").decode(),
        "tdlib": tdlib["secret"],
        "typo": hexs[:31] + "g",
        "spaces": "  DD" + hexs + "\n",
    }
    for name, text in forms.items():
        write("secret", f"{name}.txt", text)
    mtg_licence("secret")

    # proxy_in: v1 and v2 headers with the client's first bytes behind them.
    hello_start = b"\x16\x03\x01\x02\x00\x01"
    v1 = b"PROXY TCP4 198.51.100.9 10.0.0.1 40000 443\r\n"
    write("proxy_in", "v1-tcp4.bin", segmented([], v1 + hello_start))
    write("proxy_in", "v1-tcp4-bytewise.bin", segmented([1], v1 + hello_start))
    write("proxy_in", "v1-tcp6.bin", segmented([9, 30], b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n" + hello_start))
    write("proxy_in", "v1-unknown.bin", segmented([], b"PROXY UNKNOWN\r\n"))
    sig = b"\r\n\r\n\x00\r\nQUIT\n"

    def v2(command, family, addresses, tlvs=b""):
        body = addresses + tlvs
        return sig + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body

    ipv4 = bytes([192, 0, 2, 7, 10, 0, 0, 1]) + struct.pack(">HH", 5000, 443)
    ipv6 = bytes.fromhex("20010db8" + "00" * 11 + "01" + "20010db8" + "00" * 11 + "02") + struct.pack(">HH", 1234, 443)
    write("proxy_in", "v2-tcp4.bin", segmented([], v2(1, 0x11, ipv4) + hello_start))
    write("proxy_in", "v2-tcp6-segments.bin", segmented([3, 16], v2(1, 0x21, ipv6) + hello_start))
    write("proxy_in", "v2-local.bin", segmented([], v2(0, 0x00, b"")))
    authority = b"\x02" + struct.pack(">H", 11) + b"example.com"
    write("proxy_in", "v2-tcp4-tlv.bin", segmented([], v2(1, 0x11, ipv4, authority) + hello_start))

    # config: the example file and small variants of each section.
    write("config", "routes.example.yaml", (ROOT / "routes.example.yaml").read_text())
    write("config", "minimal.yaml", "listen: 127.0.0.1:8443\ndefault: { to: 127.0.0.1:9445 }\n")
    write(
        "config",
        "every-key.yaml",
        """listen: [0.0.0.0:443, "[::]:443"]
accept_proxy_protocol_from: [127.0.0.1/32, "::1"]
timeouts: { client_hello: 3s, connect: 2s, idle: 1h, shutdown_grace: 5 }
limits: { max_connections: 10, max_connections_per_ip: 2 }
metrics: { listen: 127.0.0.1:9100 }
routes:
  - sni: a.example.com
    to: 127.0.0.1:8443
  - sni: ["*.example.com", example.com]
    to: [127.0.0.1:8443, backend.internal:8444]
    proxy_protocol: v2
default: { to: 127.0.0.1:8443, proxy_protocol: v1 }
non_tls: { to: 127.0.0.1:8080 }
""",
    )
    write(
        "config",
        "mtproto.yaml",
        f"""listen: 127.0.0.1:8443
mtproto:
  users:
    alice: {tdlib["secret"]}
    bob: {forms["ee-domain"]}
    carol: {forms["base64-std-padded"]}
  max_clock_skew: 10m
  replay_cache: 1000
  allow_plain: true
  fast_mode: true
  datacenters:
    2: [127.0.0.1:4002]
    4: 127.0.0.1:4003
routes:
  - sni: storage.googleapis.com
    mtproto: true
    to: 127.0.0.1:9444
""",
    )
    write(
        "config",
        "tls-files.yaml",
        """listen: 127.0.0.1:8443
routes:
  - sni: panel.example.com
    tls: { cert: does-not-exist.pem, key: does-not-exist.key, alpn: [http/1.1] }
    to: 127.0.0.1:3000
""",
    )


if __name__ == "__main__":
    main()
