#!/usr/bin/env python3
"""Telethon (a real MTProto client library) through frontgate's fake-TLS MTProto proxy.

Run by integration/telethon.sh, which starts frontgate with `mtproto.datacenters` pointing
every DC id at --dc-port and an `mtproto: true` route for --domain whose `to` is
--backend-port. This process serves both of those ports (asyncio, 127.0.0.1 only) and drives
Telethon with the TelethonFakeTLS connection class:

  fake DC   reads the proxy's 64-byte obfuscated2 init (DC side, no secret: the proxy's
            encrypt key/iv = init[8..56], the reply key/iv = the same 48 bytes reversed),
            checks the protocol tag, parses the client's (padded) intermediate framing,
            expects an unencrypted req_pq_multi and answers with a well-formed resPQ that
            echoes the nonce but lists only an RSA fingerprint Telethon does not know.
  backend   the route's real site: records what it receives (a probe's ClientHello).

Checks (one `ok   ...` / `FAIL ...` line each):
  1. with the right ee-secret the DC gets an init with Telethon's tag and DC 2;
  2. the DC parses a well-formed req_pq_multi;
  3. Telethon parses the resPQ (nonce matched, pq factorised) and fails with SecurityError
     on the unknown fingerprint, not with a transport/connection error;
  4. with a wrong secret nothing reaches the DC, and the backend gets Telethon's
     ClientHello byte for byte.
"""

import argparse
import asyncio
import logging
import os
import struct
import sys
import time
import warnings

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from telethon import TelegramClient
from telethon.crypto import rsa
from telethon.errors import SecurityError
from telethon.network import authenticator
from telethon.sessions import StringSession
from TelethonFakeTLS import ConnectionTcpMTProxyFakeTLS
from TelethonFakeTLS.FakeTLS.FakeTLSHello import MTProxyFakeTLSClientCodec

REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
VECTOR = 0x1CB5C415
# An RSA fingerprint no Telegram key has: Telethon must refuse to go on with it.
UNKNOWN_FINGERPRINT = 0x0123456789ABCDEF
# pq = 1229739323 * 1402015859, small enough for Telethon's pure-Python factorisation.
PQ = 0x17ED48941A08F981
TAGS = {b"\xdd" * 4: "padded intermediate", b"\xee" * 4: "intermediate"}

RESULTS = {"passed": 0, "failed": 0}


LABEL = [""]


def ok(what):
    RESULTS["passed"] += 1
    print(f"ok   {LABEL[0]}{what}", flush=True)


def fail(what, why):
    RESULTS["failed"] += 1
    print(f"FAIL {LABEL[0]}{what}: {' '.join(str(why).split())[:400]}", flush=True)


def ctr(key_iv):
    """AES-256-CTR with the 16-byte IV as a 128-bit big-endian counter (obfuscated2)."""
    return Cipher(algorithms.AES(bytes(key_iv[:32])), modes.CTR(bytes(key_iv[32:48]))).encryptor()


def tl_bytes(data):
    """TL `bytes`: a length byte, the data, zero padding to a multiple of 4."""
    assert len(data) < 254
    out = bytes([len(data)]) + data
    return out + b"\0" * (-len(out) % 4)


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
            pass  # the client went away (expected once Telethon gives up)
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
        padded = tag == b"\xdd" * 4
        while True:
            length = int.from_bytes(decrypt.update(await reader.readexactly(4)), "little")
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
                and msg_len == 20
                and len(body) == 20
                and ctor == REQ_PQ_MULTI
                and 0 <= extra <= (3 if padded else 0)
            )
            if not well_formed:
                self.errors.append(f"not a well-formed req_pq_multi: {parsed}")
                return
            self.requests.append(parsed)
            server_nonce = os.urandom(16)
            res_pq = (
                struct.pack("<I", RES_PQ)
                + parsed["nonce"]
                + server_nonce
                + tl_bytes(PQ.to_bytes(8, "big"))
                + struct.pack("<Iiq", VECTOR, 1, UNKNOWN_FINGERPRINT)
            )
            server_msg_id = (int(time.time()) << 32) | 1  # a server response: msg_id % 4 == 1
            message = struct.pack("<qqi", 0, server_msg_id, len(res_pq)) + res_pq
            if padded:
                message += os.urandom(os.urandom(1)[0] % 4)
            writer.write(encrypt.update(struct.pack("<i", len(message)) + message))
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


class EeSecretFakeTLS(ConnectionTcpMTProxyFakeTLS):
    """ConnectionTcpMTProxyFakeTLS fed the ee-secret a user pastes.

    TelethonFakeTLS's codec prepends its own `ee` (`bytes.fromhex(f'ee{secret}')`), so it
    wants the secret without the leading `ee`; strip it here so the test passes the ee-form
    exactly as a Telegram link carries it."""

    def __init__(self, ip, port, dc_id, *, loggers, proxy=None, local_addr=None):
        secret = proxy[2]
        if secret[:2].lower() == "ee":
            secret = secret[2:]
        super().__init__(
            ip, port, dc_id, loggers=loggers, proxy=(proxy[0], proxy[1], secret), local_addr=local_addr
        )


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


# Telethon warns that `proxy` is ignored without python-socks; that is about SOCKS/HTTP proxies,
# an MTProxy connection class uses the proxy tuple itself.
warnings.filterwarnings("ignore", message="proxy argument will be ignored")

AUTH_ERRORS = []
_do_authentication = authenticator.do_authentication


async def recording_do_authentication(sender):
    """Telethon's own step-1/step-2 code; remembers the exception it ends with."""
    try:
        return await _do_authentication(sender)
    except BaseException as e:
        AUTH_ERRORS.append(e)
        raise


authenticator.do_authentication = recording_do_authentication


async def run_telethon(proxy_port, ee_secret, timeout):
    """One TelegramClient.connect() through the proxy; returns (exception or None, log records)."""
    capture = Capture()
    tlog = logging.getLogger("telethon")
    tlog.addHandler(capture)
    tlog.setLevel(logging.DEBUG)
    client = TelegramClient(
        StringSession(),  # no DC stored: Telethon uses its default, DC 2
        api_id=1,
        api_hash="x",
        connection=EeSecretFakeTLS,
        proxy=("127.0.0.1", proxy_port, ee_secret),
        connection_retries=0,  # one attempt: the first failure is the one we judge
        retry_delay=0,
        timeout=timeout,
        receive_updates=False,
    )
    error = None
    try:
        await asyncio.wait_for(client.connect(), timeout + 5)
    except BaseException as e:  # noqa: BLE001
        error = e
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 5)
        except BaseException:  # noqa: BLE001
            pass
        tlog.removeHandler(capture)
    return error, capture.records


def describe(error):
    return "no exception" if error is None else f"{type(error).__name__}: {error}"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy-port", type=int, required=True)
    ap.add_argument("--dc-port", type=int, required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    ap.add_argument("--secret", required=True, help="32 hex chars (frontgate's user secret)")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--timeout", type=float, default=15)
    ap.add_argument("--label", default="", help="prefix for the check names")
    args = ap.parse_args()
    LABEL[0] = f"[{args.label}] " if args.label else ""

    assert UNKNOWN_FINGERPRINT not in rsa._server_keys, "the test fingerprint must be unknown"

    dc = FakeDc()
    backend = Backend()
    dc_server = await asyncio.start_server(dc.handle, "127.0.0.1", args.dc_port)
    backend_server = await asyncio.start_server(backend.handle, "127.0.0.1", args.backend_port)

    # ---------------------------------------------------------------- right secret
    ee_secret = "ee" + args.secret + args.domain.encode().hex()
    print(f"# Telethon -> frontgate 127.0.0.1:{args.proxy_port} with secret {ee_secret}", flush=True)
    error, records = await run_telethon(args.proxy_port, ee_secret, args.timeout)
    print(f"# TelegramClient.connect() ended with {describe(error)}", flush=True)
    for e in AUTH_ERRORS:
        print(f"# do_authentication raised {type(e).__name__}: {e}", flush=True)
    for rec in records:
        if rec.levelno >= logging.WARNING:
            print(f"# telethon {rec.levelname}: {rec.getMessage()}", flush=True)

    what = "right secret: frontgate relays Telethon to fake DC 2 with its protocol tag"
    if dc.inits and dc.inits[0][1] == 2 and dc.inits[0][0] in TAGS and len(dc.inits) == 1:
        ok(f"{what} (tag {dc.inits[0][0].hex()}, dc {dc.inits[0][1]})")
    else:
        fail(what, f"DC connections {dc.connections}, inits {[(t.hex(), d) for t, d in dc.inits]}, errors {dc.errors}")

    what = "fake DC parsed a well-formed unencrypted req_pq_multi"
    if len(dc.requests) == 1 and not dc.errors:
        r = dc.requests[0]
        ok(f"{what} (msg_id {r['msg_id']:#x}, nonce {r['nonce'].hex()})")
    else:
        fail(what, f"requests {dc.requests}, errors {dc.errors}")

    what = "Telethon parsed the resPQ and refused the unknown RSA fingerprint (SecurityError)"
    auth = AUTH_ERRORS[0] if AUTH_ERRORS else None
    transport_trouble = [
        rec.getMessage()
        for rec in records
        if rec.levelno >= logging.WARNING
        and ("connecting failed" in rec.getMessage() or "Connection error" in rec.getMessage())
    ]
    if (
        isinstance(auth, SecurityError)
        and "fingerprint" in str(auth)
        and str(UNKNOWN_FINGERPRINT) in str(auth)
        and not transport_trouble
        and isinstance(error, ConnectionError)
        and "auth_key generation failed" in str(error)
    ):
        ok(f"{what}: {type(auth).__name__}: {auth}")
    else:
        fail(
            what,
            f"authentication ended with {describe(auth)}; connect() with {describe(error)}; "
            f"transport warnings {transport_trouble}",
        )

    # ---------------------------------------------------------------- wrong secret
    dc_before = dc.connections
    backend_before = len(backend.received)
    wrong = bytes(b ^ 0x5A for b in bytes.fromhex(args.secret)).hex()
    wrong_ee = "ee" + wrong + args.domain.encode().hex()
    print(f"# Telethon -> frontgate with a wrong secret {wrong_ee}", flush=True)
    error, records = await run_telethon(args.proxy_port, wrong_ee, args.timeout)
    print(f"# TelegramClient.connect() ended with {describe(error)}", flush=True)
    # The codec keeps the last ClientHello it built in a class-level dict.
    sent_hello = b"".join(MTProxyFakeTLSClientCodec.client_hello_dict.values())
    await asyncio.sleep(0.5)

    what = "wrong secret: Telethon fails and nothing reaches the fake DC"
    if error is not None and dc.connections == dc_before:
        ok(f"{what} ({describe(error)})")
    else:
        fail(what, f"connect() {describe(error)}; DC connections {dc_before} -> {dc.connections}")

    what = "wrong secret: the route's backend got Telethon's ClientHello, unchanged"
    got = backend.received[backend_before:]
    if (
        len(got) == 1
        and got[0][:3] == b"\x16\x03\x01"
        and len(got[0]) > 9
        and got[0][5] == 0x01
        and args.domain.encode() in got[0]
        and got[0] == sent_hello
    ):
        ok(f"{what} ({len(got[0])} bytes, SNI {args.domain})")
    else:
        fail(
            what,
            f"backend connections {len(got)}, first bytes {[g[:16].hex() for g in got]}, "
            f"equal to the sent hello: {[g == sent_hello for g in got]}",
        )

    dc_server.close()
    backend_server.close()
    return RESULTS["failed"] == 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(0 if asyncio.run(main()) else 1)
