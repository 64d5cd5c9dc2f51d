"""The fake Telegram side shared by the real-client suites (telethon/check.py, tdlib/check.py).

frontgate runs with `mtproto.datacenters` pointing every DC id at a FakeDc and with an
`mtproto: true` route whose `to` is a Backend; a real client library then connects through
frontgate. Everything here listens on 127.0.0.1 only.

  FakeDc    reads the proxy's 64-byte obfuscated2 init (DC side, no secret: the proxy's
            encrypt key/iv = init[8..56], the reply key/iv = the same 48 bytes reversed;
            PROTOCOL.md section 6), checks the protocol tag, parses the client's abridged,
            intermediate or padded intermediate framing, expects unencrypted req_pq_multi
            messages (the message data may carry padding after the request, as TDLib's
            does) and answers each with a well-formed resPQ that echoes the nonce but
            lists only an RSA fingerprint no Telegram key has (so no client goes further).
  Backend   the route's real site: records what each connection sends (a probe's
            ClientHello, see is_client_hello), answers nothing.
  Checks    the `ok   <what>` / `FAIL <what>: <why>` lines the suites' shell parts count.
"""

import asyncio
import os
import struct
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
VECTOR = 0x1CB5C415
# An RSA fingerprint no Telegram key has: a client must refuse to go on with it.
UNKNOWN_FINGERPRINT = 0x0123456789ABCDEF
# pq = 1229739323 * 1402015859, small enough for Telethon's pure-Python factorisation.
PQ = 0x17ED48941A08F981
TAGS = {b"\xdd" * 4: "padded intermediate", b"\xee" * 4: "intermediate", b"\xef" * 4: "abridged"}
# Transport padding a client may append to a padded intermediate packet (0..15 bytes; TDLib
# uses all of them, Telethon 0..3).
MAX_PADDING = 15


class Checks:
    """Counts and prints the check lines, each name prefixed with `[label] `."""

    def __init__(self, label=""):
        self.prefix = f"[{label}] " if label else ""
        self.passed = 0
        self.failed = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok   {self.prefix}{what}", flush=True)

    def fail(self, what, why):
        self.failed += 1
        print(f"FAIL {self.prefix}{what}: {' '.join(str(why).split())[:400]}", flush=True)


def ctr(key_iv):
    """AES-256-CTR with the 16-byte IV as a 128-bit big-endian counter (obfuscated2)."""
    return Cipher(algorithms.AES(bytes(key_iv[:32])), modes.CTR(bytes(key_iv[32:48]))).encryptor()


def tl_bytes(data):
    """TL `bytes`: a length byte, the data, zero padding to a multiple of 4."""
    assert len(data) < 254
    out = bytes([len(data)]) + data
    return out + b"\0" * (-len(out) % 4)


def res_pq_message(nonce):
    """An unencrypted MTProto message holding a resPQ for `nonce`."""
    body = (
        struct.pack("<I", RES_PQ)
        + nonce
        + os.urandom(16)  # server_nonce
        + tl_bytes(PQ.to_bytes(8, "big"))
        + struct.pack("<Iiq", VECTOR, 1, UNKNOWN_FINGERPRINT)
    )
    server_msg_id = (int(time.time()) << 32) | 1  # a server response: msg_id % 4 == 1
    return struct.pack("<qqi", 0, server_msg_id, len(body)) + body


class Framing:
    """The MTProto transport a protocol tag names, on an already decrypted stream."""

    def __init__(self, tag):
        self.abridged = tag == b"\xef" * 4
        self.padded = tag == b"\xdd" * 4

    async def read_length(self, reader, decrypt):
        if not self.abridged:
            return int.from_bytes(decrypt.update(await reader.readexactly(4)), "little")
        first = decrypt.update(await reader.readexactly(1))[0] & 0x7F  # 0x80: quick ack
        if first == 0x7F:
            first = int.from_bytes(decrypt.update(await reader.readexactly(3)), "little")
        return first * 4

    def frame(self, message):
        if self.abridged:
            words = len(message) // 4
            head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
            return head + message
        if self.padded:
            message += os.urandom(os.urandom(1)[0] % 4)
        return struct.pack("<i", len(message)) + message


class FakeDc:
    """Speaks just enough of a Telegram DC to answer req_pq_multi."""

    def __init__(self):
        self.connections = 0
        self.inits = []  # (tag bytes, dc index)
        self.requests = []  # parsed req_pq_multi: dict
        self.errors = []

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            await self.serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away (expected once it has its answer or gives up)
        except Exception as e:  # noqa: BLE001 - report anything odd
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            writer.close()

    async def serve(self, reader, writer):
        wire = await reader.readexactly(64)
        key_iv = wire[8:56]
        decrypt = ctr(key_iv)
        encrypt = ctr(key_iv[::-1])
        plain = decrypt.update(wire)
        tag = plain[56:60]
        dc = int.from_bytes(plain[60:62], "little", signed=True)
        self.inits.append((tag, dc))
        print(f"# fake DC: init tag {tag.hex()} ({TAGS.get(tag, 'unknown')}), dc {dc}", flush=True)
        if tag not in TAGS:
            self.errors.append(f"unexpected protocol tag {tag.hex()}")
            return
        framing = Framing(tag)
        while True:
            length = await framing.read_length(reader, decrypt)
            if not 20 <= length <= 1 << 20:
                self.errors.append(f"implausible transport packet length {length}")
                return
            packet = decrypt.update(await reader.readexactly(length))
            auth_key_id, msg_id, msg_len = struct.unpack_from("<qqi", packet)
            body = packet[20 : 20 + msg_len]
            extra = length - 20 - msg_len
            ctor = int.from_bytes(body[:4], "little") if len(body) >= 4 else None
            parsed = {
                "auth_key_id": auth_key_id,
                "msg_id": msg_id,
                "msg_len": msg_len,
                "constructor": ctor,
                "nonce": body[4:20],
                "transport_padding": extra,
            }
            print(
                f"# fake DC: packet {length} bytes: auth_key_id {auth_key_id}, msg_id {msg_id:#x}, "
                f"length {msg_len}, constructor {ctor:#010x}, nonce {body[4:20].hex()}, "
                f"transport padding {extra}",
                flush=True,
            )
            well_formed = (
                auth_key_id == 0
                and msg_id != 0
                # TDLib pads the message data with random bytes after the 20-byte
                # req_pq_multi (td/mtproto/NoCryptoStorer.h); a DC ignores them.
                and msg_len >= 20
                and msg_len % 4 == 0
                and len(body) == msg_len
                and ctor == REQ_PQ_MULTI
                and 0 <= extra <= (MAX_PADDING if framing.padded else 0)
            )
            if not well_formed:
                self.errors.append(f"not a well-formed req_pq_multi: {parsed}")
                return
            self.requests.append(parsed)
            writer.write(encrypt.update(framing.frame(res_pq_message(parsed["nonce"]))))
            await writer.drain()


class Backend:
    """The route's `to`: collects what each connection sends, answers nothing."""

    def __init__(self):
        self.received = []

    async def handle(self, reader, writer):
        data = b""
        try:
            head = await asyncio.wait_for(reader.readexactly(5), 10)
            data = head
            if head[0] == 0x16:
                data += await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(head[3:5], "big")), 10
                )
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError) as e:
            data += getattr(e, "partial", b"")
        finally:
            self.received.append(data)
            writer.close()


def is_client_hello(record, domain):
    """`record` is one TLS handshake record holding a ClientHello that names `domain`."""
    return (
        record[:3] == b"\x16\x03\x01"
        and len(record) > 9
        and record[5] == 0x01
        and domain.encode() in record
    )


async def start(dc_port, backend_port):
    """Serve a FakeDc and a Backend on 127.0.0.1; returns (dc, backend, servers)."""
    dc = FakeDc()
    backend = Backend()
    servers = [
        await asyncio.start_server(dc.handle, "127.0.0.1", dc_port),
        await asyncio.start_server(backend.handle, "127.0.0.1", backend_port),
    ]
    return dc, backend, servers
