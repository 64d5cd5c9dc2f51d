#!/usr/bin/env python3
"""Telethon (a real MTProto client library) through frontgate's fake-TLS MTProto proxy.

Run by integration/telethon.sh, which starts frontgate with `mtproto.datacenters` pointing
every DC id at --dc-port and an `mtproto: true` route for --domain whose `to` is
--backend-port. This process serves both of those ports (asyncio, 127.0.0.1 only) with the
fake DC and backend of integration/fake_dc.py and drives Telethon with the TelethonFakeTLS
connection class. The fake DC answers req_pq_multi with a well-formed resPQ that echoes the
nonce but lists only an RSA fingerprint Telethon does not know.

The route's `mimic` mode is --mimic. With `off` the backend is fake_dc's silent one; with
`live` and `learned` it relays to --upstream-port, a real TLS 1.3 server (nginx), so frontgate
has a flight to mirror. With --ready-file/--go-file the fake servers listen before frontgate
starts, so its start-up probe of the backend is seen too.

Checks (one `ok   ...` / `FAIL ...` line each):
  0. the start-up probe: none with mimic off; otherwise one, with frontgate's own (rustls's)
     ClientHello for --domain, not Telethon's;
  1. with the right ee-secret the DC gets an init with Telethon's tag and DC 2; the backend
     got, by mimic mode, nothing (off), exactly Telethon's hello on one mirror connection
     frontgate closed (live), at most that (learned);
  2. the DC parses a well-formed req_pq_multi;
  3. Telethon parses the resPQ (nonce matched, pq factorised) and fails with SecurityError
     on the unknown fingerprint, not with a transport/connection error;
  4. with a wrong secret nothing reaches the DC, and the backend gets Telethon's
     ClientHello byte for byte, on one connection.
"""

import argparse
import asyncio
import logging
import os
import sys
import warnings

from telethon import TelegramClient
from telethon.crypto import rsa
from telethon.errors import SecurityError
from telethon.network import authenticator
from telethon.sessions import StringSession
from TelethonFakeTLS import ConnectionTcpMTProxyFakeTLS
from TelethonFakeTLS.FakeTLS.FakeTLSHello import MTProxyFakeTLSClientCodec

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fake_dc  # noqa: E402 - integration/fake_dc.py, shared with tdlib/check.py
from fake_dc import TAGS, UNKNOWN_FINGERPRINT  # noqa: E402


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
    fake_dc.add_arguments(ap)
    args = ap.parse_args()
    checks = fake_dc.Checks(args.label)

    assert UNKNOWN_FINGERPRINT not in rsa._server_keys, "the test fingerprint must be unknown"

    upstream = None if args.mimic == "off" else args.upstream_port
    dc, backend, servers = await fake_dc.start(args.dc_port, args.backend_port, upstream)
    if not await fake_dc.ready_then_wait(args.ready_file, args.go_file):
        checks.fail("the shell started frontgate", f"no {args.go_file} within 30 s")
        return False

    def sent_hello():
        # The codec keeps the last ClientHello it built in a class-level dict.
        return b"".join(MTProxyFakeTLSClientCodec.client_hello_dict.values())

    def telethon_hello(data):
        return bool(data) and data == sent_hello()

    await backend.settle()
    fake_dc.judge_probes(checks, args.mimic, list(backend.connections), 1, args.domain, telethon_hello)
    backend_before = len(backend.connections)

    # ---------------------------------------------------------------- right secret
    ee_secret = "ee" + args.secret + args.domain.encode().hex()
    print(f"# Telethon -> frontgate 127.0.0.1:{args.proxy_port} with secret {ee_secret}", flush=True)
    error, records = await run_telethon(args.proxy_port, ee_secret, args.timeout)
    print(f"# TelegramClient.connect() ended with {describe(error)}", flush=True)
    await backend.settle()
    fake_dc.judge_mirror(
        checks, args.mimic, backend.connections[backend_before:], telethon_hello, "Telethon's hello"
    )
    for e in AUTH_ERRORS:
        print(f"# do_authentication raised {type(e).__name__}: {e}", flush=True)
    for rec in records:
        if rec.levelno >= logging.WARNING:
            print(f"# telethon {rec.levelname}: {rec.getMessage()}", flush=True)

    what = "right secret: frontgate relays Telethon to fake DC 2 with its protocol tag"
    if dc.inits and dc.inits[0][1] == 2 and dc.inits[0][0] in TAGS and len(dc.inits) == 1:
        checks.ok(f"{what} (tag {dc.inits[0][0].hex()}, dc {dc.inits[0][1]})")
    else:
        checks.fail(what, f"DC connections {dc.connections}, inits {[(t.hex(), d) for t, d in dc.inits]}, errors {dc.errors}")

    what = "fake DC parsed a well-formed unencrypted req_pq_multi"
    if len(dc.requests) == 1 and not dc.errors:
        r = dc.requests[0]
        checks.ok(f"{what} (msg_id {r['msg_id']:#x}, nonce {r['nonce'].hex()})")
    else:
        checks.fail(what, f"requests {dc.requests}, errors {dc.errors}")

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
        checks.ok(f"{what}: {type(auth).__name__}: {auth}")
    else:
        checks.fail(
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
    wrong_hello = sent_hello()
    # Telethon keeps the failed connection open a while: its end is not waited for.
    await asyncio.sleep(0.5)

    what = "wrong secret: Telethon fails and nothing reaches the fake DC"
    if error is not None and dc.connections == dc_before:
        checks.ok(f"{what} ({describe(error)})")
    else:
        checks.fail(what, f"connect() {describe(error)}; DC connections {dc_before} -> {dc.connections}")

    what = "wrong secret: the route's backend got Telethon's ClientHello, unchanged, on one connection"
    conns = backend.connections[backend_before:]
    # Its first bytes; with a real TLS server behind the backend Telethon may write more after
    # reading its answer (that is Telethon talking to the site, not frontgate).
    got = [c.received[: len(wrong_hello)] for c in conns]
    if len(got) == 1 and fake_dc.is_client_hello(got[0], args.domain) and got[0] == wrong_hello:
        checks.ok(f"{what} ({len(got[0])} bytes, SNI {args.domain}; {fake_dc.describe_connection(conns[0])})")
    else:
        checks.fail(
            what,
            f"backend connections {len(got)}, first bytes {[g[:16].hex() for g in got]}, "
            f"equal to the sent hello: {[g == wrong_hello for g in got]}",
        )

    for server in servers:
        server.close()
    return checks.failed == 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(0 if asyncio.run(main()) else 1)
