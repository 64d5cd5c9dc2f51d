"""A Telegram-like client for middle-proxy mode: fake-TLS (a recorded 517-byte hello from
tests/data/mtg, re-signed: mtprotoproxy 1.0.6 takes only hellos of that size), obfuscated2 with the padded-intermediate tag for DC 2, then MTProto transport
messages (4-byte length + message) in TLS records; every message must come back whole and in
order (the fake middle proxy echoes each RPC_PROXY_REQ's message as an RPC_PROXY_ANS, which
the proxy frames back). Used by integration/middle-crosscheck.sh against mtprotoproxy and
frontgate through the same fake ME.

  echo.py --port P --secret HEX32 --sessions N
Prints `ok N sessions` and exits 0, or prints why and exits 1.
"""

import argparse
import asyncio
import hashlib
import os
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from faketls_client import (  # noqa: E402
    CCS,
    TAG_PADDED_INTERMEDIATE,
    load_hello,
    obfuscated2_init,
    sign_hello,
    tls_record,
    verify_flight,
)

# Its SNI is storage.googleapis.com: the proxies under test route that name (nothing resolves it).
TEMPLATE = load_hello(HERE.parent.parent / "tests/data/mtg/faketls/client-hello-ok-19dfe38384b9884b.json")
SIZES = [8, 64, 508, 4096, 70000, 16]


def ctr(key, iv):
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


async def read_record(reader):
    head = await reader.readexactly(5)
    body = await reader.readexactly(int.from_bytes(head[3:5], "big"))
    return head, body


async def session(port, secret):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    record, random = sign_hello(TEMPLATE, secret)
    writer.write(record)
    data = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        if not chunk:
            raise RuntimeError("closed during the server flight")
        data += chunk
        ok, why, end = verify_flight(data, secret, random)
        if ok:
            break
        if not why.startswith("cut"):
            raise RuntimeError("bad server flight: " + why)
    if len(data) > end:
        raise RuntimeError("bytes after the server flight")
    init = obfuscated2_init(secret, TAG_PADDED_INTERMEDIATE, 2)
    key_iv = init[8:56]
    enc = ctr(hashlib.sha256(key_iv[:32] + secret).digest(), key_iv[32:48])
    enc.update(bytes(64))
    rev = key_iv[::-1]
    dec = ctr(hashlib.sha256(rev[:32] + secret).digest(), rev[32:48])
    out = CCS + tls_record(init)
    messages = []
    for size in SIZES:
        msg = bytearray(os.urandom(size))
        msg[0] |= 1
        messages.append(bytes(msg))
        framed = enc.update(struct.pack("<I", size) + bytes(msg))
        for at in range(0, len(framed), 16384):
            out += tls_record(framed[at : at + 16384])
    writer.write(out)
    await writer.drain()
    plain = b""
    for i, msg in enumerate(messages):
        while True:
            if len(plain) >= 4:
                length = struct.unpack("<I", plain[:4])[0]
                if len(plain) >= 4 + length:
                    break
            head, body = await asyncio.wait_for(read_record(reader), 10)
            if head[:3] != b"\x17\x03\x03":
                raise RuntimeError("non-data record " + head.hex())
            plain += dec.update(body)
        length = struct.unpack("<I", plain[:4])[0]
        got = plain[4 : 4 + length]
        plain = plain[4 + length :]
        if not (len(msg) <= length < len(msg) + 4 and got[: len(msg)] == msg):
            raise RuntimeError(f"message {i} ({len(msg)} bytes) came back as {length} bytes, changed")
    writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--sessions", type=int, default=3)
    args = p.parse_args()
    secret = bytes.fromhex(args.secret)
    for _ in range(args.sessions):
        await session(args.port, secret)
    print(f"ok {args.sessions} sessions")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - the suite prints the reason
        print(f"failed: {type(e).__name__}: {e}")
        sys.exit(1)
