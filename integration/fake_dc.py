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
  Backend   the route's `to`: records what each connection sends (a probe's ClientHello,
            see is_client_hello) as a BackendConnection. Without an upstream it answers
            nothing (the fake backend of `mimic: off`); with one (`mimic: live | learned`)
            it relays each connection to that real TLS 1.3 server (nginx on loopback), so
            frontgate has a flight to mirror and the suites still see every byte it sent.
  judge_*   the per-mimic-mode checks of what the backend got (frontgate's start-up probe,
            the live mirror of a valid hello, the fallback of a wrong secret).
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


class BackendConnection:
    """One connection to the Backend: what frontgate sent on it and how it ended."""

    def __init__(self, opened):
        self.opened = opened  # time.monotonic()
        self.received = b""  # every byte frontgate sent (the first 64 KiB)
        self.answered = 0  # bytes the upstream sent back (0 without one)
        self.closed_by = None  # "frontgate", "backend", "timeout" or an error
        self.done = asyncio.Event()


class Backend:
    """The route's `to`: collects what each connection sends. Without `upstream` it reads
    one TLS record and closes, answering nothing; with `upstream` (a port on 127.0.0.1) it
    relays the connection both ways until frontgate's side ends (at most `limit` s)."""

    def __init__(self, upstream=None, limit=10):
        self.upstream = upstream
        self.limit = limit
        self.connections = []  # BackendConnection, in the order they were opened

    @property
    def received(self):
        return [c.received for c in self.connections]

    async def handle(self, reader, writer):
        conn = BackendConnection(time.monotonic())
        self.connections.append(conn)
        try:
            if self.upstream is None:
                await self.silent(reader, conn)
            else:
                await self.relay(reader, writer, conn)
        finally:
            writer.close()
            conn.done.set()

    async def silent(self, reader, conn):
        try:
            head = await asyncio.wait_for(reader.readexactly(5), self.limit)
            conn.received = head
            if head[0] == 0x16:
                conn.received += await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(head[3:5], "big")), self.limit
                )
            conn.closed_by = "backend"
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError) as e:
            conn.received += getattr(e, "partial", b"")
            conn.closed_by = "timeout" if isinstance(e, asyncio.TimeoutError) else "frontgate"

    async def relay(self, reader, writer, conn):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError as e:
            conn.closed_by = f"upstream connect failed: {e}"
            return

        async def down():  # upstream -> frontgate
            while data := await up_reader.read(65536):
                conn.answered += len(data)
                writer.write(data)
                await writer.drain()

        async def up():  # frontgate -> upstream
            while data := await reader.read(65536):
                if len(conn.received) < 65536:
                    conn.received += data[: 65536 - len(conn.received)]
                up_writer.write(data)
                await up_writer.drain()

        tasks = {asyncio.create_task(up(), name="frontgate"), asyncio.create_task(down(), name="backend")}
        try:
            done, _ = await asyncio.wait(tasks, timeout=self.limit, return_when=asyncio.FIRST_COMPLETED)
            first = next(iter(done), None)
            if first is None:
                conn.closed_by = "timeout"
            elif first.exception() is not None:
                conn.closed_by = f"{first.get_name()} side: {type(first.exception()).__name__}"
            else:
                conn.closed_by = first.get_name()  # whose side ended first
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.close()

    async def settle(self, timeout=5):
        """Wait (bounded) until every connection so far has ended."""
        pending = [c.done.wait() for c in self.connections if not c.done.is_set()]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), timeout)
            except asyncio.TimeoutError:
                pass


def tls_records(data):
    """`data` split into whole TLS records (a trailing partial record is left out)."""
    records = []
    while len(data) >= 5:
        end = 5 + int.from_bytes(data[3:5], "big")
        if len(data) < end:
            break
        records.append(data[:end])
        data = data[end:]
    return records


def hello_sni(record):
    """The server_name of the ClientHello in TLS record `record`, or None."""
    try:
        if record[0] != 0x16 or record[5] != 0x01:
            return None
        i = 9 + 2 + 32  # record header, handshake header, version, random
        i += 1 + record[i]  # session id
        i += 2 + int.from_bytes(record[i : i + 2], "big")  # cipher suites
        i += 1 + record[i]  # compression methods
        end = i + 2 + int.from_bytes(record[i : i + 2], "big")
        i += 2
        while i + 4 <= end:
            kind, size = int.from_bytes(record[i : i + 2], "big"), int.from_bytes(record[i + 2 : i + 4], "big")
            body = record[i + 4 : i + 4 + size]
            if kind == 0:  # server_name: list length, type 0, name length, name
                return body[5 : 5 + int.from_bytes(body[3:5], "big")].decode()
            i += 4 + size
    except (IndexError, UnicodeDecodeError):
        pass
    return None


def describe_connection(c):
    records = tls_records(c.received)
    return (
        f"{len(c.received)} bytes in {len(records)} record(s), SNI {hello_sni(c.received)!r}, "
        f"answered {c.answered} bytes, closed by {c.closed_by}"
    )


def judge_probes(checks, mode, conns, probes, domain, is_own_hello):
    """frontgate's start-up probe: with mimic live/learned each of `probes` frontgates asks
    the backend once, with rustls's own ClientHello for the route's name (one record, not a
    client's hello: `is_own_hello` false), reads the answer and closes; then, the site being
    TLS 1.3, downloads `/` from it once to learn its record sizes (a whole TLS connection:
    the hello, the client's Finished, the request); with off, none of either."""
    if mode == "off":
        what = "mimic: off: no start-up probe reaches the backend"
        if not conns:
            checks.ok(what)
        else:
            checks.fail(what, f"{len(conns)} connection(s): {[describe_connection(c) for c in conns]}")
        return
    what = (
        f"mimic: {mode}: the start-up probe asks the backend once per frontgate ({probes}) with a "
        f"ClientHello of its own for {domain} and closes after the answer"
    )
    good = [
        c
        for c in conns
        if c.done.is_set()
        and len(tls_records(c.received)) == 1
        and len(tls_records(c.received)[0]) == len(c.received)
        and hello_sni(c.received) == domain
        and not is_own_hello(c.received)
        and c.answered > 0
        and c.closed_by == "frontgate"
    ]
    downloads = [
        c
        for c in conns
        if c not in good
        and len(tls_records(c.received)) > 1
        and hello_sni(c.received) == domain
        and not is_own_hello(c.received)
        and c.answered > 0
    ]
    if len(good) == probes and len(downloads) <= probes and len(conns) == probes + len(downloads):
        checks.ok(f"{what}; site downloads: {len(downloads)} ({'; '.join(describe_connection(c) for c in conns)})")
    else:
        checks.fail(what, f"{len(conns)} connection(s): {[describe_connection(c) for c in conns]}")


def judge_mirror(checks, mode, conns, is_own_hello, what_hello, learned_already=False):
    """What the backend got while a client with a valid secret was served: off, nothing;
    live, exactly the client's hello on one connection that frontgate closed after the
    backend's answer, and nothing after the hello; learned, at most that (none once
    `learned_already`)."""
    mirrors = [
        c
        for c in conns
        if c.done.is_set()
        and is_own_hello(c.received)
        and len(tls_records(c.received)) == 1
        and len(tls_records(c.received)[0]) == len(c.received)
        and c.answered > 0
        and c.closed_by == "frontgate"
    ]
    if mode == "off":
        what, good = "mimic: off: the backend got nothing", not conns
    elif mode == "live":
        what = (
            f"mimic: live: the backend got exactly {what_hello} on one mirror connection, "
            "which frontgate closed after the answer, and nothing after the hello"
        )
        good = len(conns) == 1 and len(mirrors) == 1
    elif learned_already:
        what, good = "mimic: learned: with the profile learned the backend got nothing", not conns
    else:
        what = (
            f"mimic: learned: the backend got at most {what_hello} on one mirror connection, "
            "closed by frontgate, and nothing after the hello"
        )
        good = len(conns) <= 1 and len(mirrors) == len(conns)
    if good:
        checks.ok(f"{what} ({'; '.join(describe_connection(c) for c in conns) or 'no connection'})")
    else:
        checks.fail(what, f"{len(conns)} connection(s): {[describe_connection(c) for c in conns]}")


def is_client_hello(record, domain):
    """`record` is one TLS handshake record holding a ClientHello that names `domain`."""
    return (
        record[:3] == b"\x16\x03\x01"
        and len(record) > 9
        and record[5] == 0x01
        and domain.encode() in record
    )


async def start(dc_port, backend_port, upstream=None):
    """Serve a FakeDc and a Backend (relaying to 127.0.0.1:`upstream` if given) on
    127.0.0.1; returns (dc, backend, servers)."""
    dc = FakeDc()
    backend = Backend(upstream)
    servers = [
        await asyncio.start_server(dc.handle, "127.0.0.1", dc_port),
        await asyncio.start_server(backend.handle, "127.0.0.1", backend_port),
    ]
    return dc, backend, servers


async def ready_then_wait(ready_file, go_file, timeout=30):
    """Tell the shell the servers listen (create `ready_file`), then wait up to `timeout` s
    for it to start frontgate and create `go_file`; False if it never did."""
    if not ready_file:
        return True
    open(ready_file, "w").close()
    deadline = time.monotonic() + timeout
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def add_arguments(ap):
    """The command-line options both check scripts take for the backend and the start-up."""
    ap.add_argument("--mimic", choices=("off", "live", "learned"), default="off")
    ap.add_argument("--upstream-port", type=int, help="the real TLS server the backend relays to")
    ap.add_argument("--probes", type=int, default=1, help="frontgates whose start-up probe to expect")
    ap.add_argument("--ready-file", help="created once the fake servers listen")
    ap.add_argument("--go-file", help="waited for (frontgate started) before the first client")
