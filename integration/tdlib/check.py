#!/usr/bin/env python3
"""TDLib (Telegram's own client library) pings the fake DC through frontgate's MTProto proxy.

Run by integration/tdlib.sh, which starts frontgate twice: on --proxy-port with the defaults
and on --plain-port with `mtproto.allow_plain: true`, both with `mtproto.datacenters` pointing
every DC id at --dc-port and an `mtproto: true` route for --domain whose `to` is
--backend-port. This process serves those two ports with the fake DC and backend of
integration/fake_dc.py (asyncio, 127.0.0.1 only) and drives libtdjson.so (--libtdjson) through
ctypes: `setTdlibParameters`, then `pingProxy` with an inline proxy object. TDLib answers
`seconds` once its req_pq_multi got a resPQ back through the proxy, or an `error`.

TDLib is told `setNetworkType networkTypeNone` before anything else: it then opens no
connection of its own (it would dial Telegram's built-in DC addresses), while pingProxy still
dials the proxy it is given.

The route's `mimic` mode is --mimic. With `off` the backend is fake_dc's silent one; with
`live` and `learned` it relays to --upstream-port, a real TLS 1.3 server (nginx), so frontgate
has a flight to mirror. With --ready-file/--go-file the fake servers listen before frontgate
starts (the shell waits for the first file, starts frontgate, creates the second), so its
start-up probe of the backend is seen too.

Checks (one `ok   ...` / `FAIL ...` line each):
  0. the start-up probe: none with mimic off; otherwise one per frontgate (--probes), with a
     ClientHello of frontgate's own (rustls's) for --domain, not TDLib's;
  1. ee-secret (fake TLS) to --proxy-port: pingProxy answers seconds, the fake DC parsed
     well-formed req_pq_multi messages; the backend got, by mimic mode, nothing (off),
     exactly TDLib's hello on one mirror connection frontgate closed (live), at most that
     (learned; and nothing for a second ping once the profile is learned);
  2. dd-secret (no TLS wrapper) to --plain-port: pingProxy answers seconds, the backend got
     nothing;
  3. a wrong ee-secret: pingProxy answers an error and nothing reaches the fake DC;
  4. ... and the route's backend got TDLib's ClientHello unchanged (its digest is valid for
     the wrong secret, so not one byte of it was altered), on one connection;
  5. a disabled user's ee-secret (a valid secret, `enabled: false`): pingProxy answers an
     error and nothing reaches the fake DC.
"""

import argparse
import asyncio
import ctypes
import dataclasses
import hashlib
import hmac
import json
import os
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fake_dc  # noqa: E402 - integration/fake_dc.py, shared with telethon/check.py

# Any values do: nothing reaches Telegram, and pingProxy needs no authorisation.
API_ID = 1
API_HASH = "0123456789abcdef0123456789abcdef"


class Tdjson:
    """libtdjson.so's JSON interface; `receive` runs in a thread of its own, answers are
    matched to requests by `@extra`."""

    def __init__(self, path, loop):
        lib = ctypes.CDLL(path)
        lib.td_create_client_id.restype = ctypes.c_int
        lib.td_send.argtypes = [ctypes.c_int, ctypes.c_char_p]
        lib.td_receive.argtypes = [ctypes.c_double]
        lib.td_receive.restype = ctypes.c_char_p
        lib.td_execute.argtypes = [ctypes.c_char_p]
        lib.td_execute.restype = ctypes.c_char_p
        self.lib = lib
        self.loop = loop
        self.pending = {}  # @extra -> future
        self.closed = asyncio.Event()
        self.next_extra = 0
        self.stop = threading.Event()
        self.client = None
        self.receiver = None

    def execute(self, query):
        return json.loads(self.lib.td_execute(json.dumps(query).encode()))

    def start(self):
        self.client = self.lib.td_create_client_id()
        self.receiver = threading.Thread(target=self.receive_loop, daemon=True)
        self.receiver.start()

    def receive_loop(self):
        while not self.stop.is_set():
            raw = self.lib.td_receive(0.2)  # ctypes drops the GIL for the call
            if raw:
                self.loop.call_soon_threadsafe(self.dispatch, json.loads(raw))

    def dispatch(self, answer):
        state = answer.get("authorization_state", {}).get("@type")
        if answer.get("@type") == "updateAuthorizationState" and state == "authorizationStateClosed":
            self.closed.set()
        future = self.pending.pop(answer.get("@extra"), None)
        if future is not None and not future.done():
            future.set_result(answer)

    def submit(self, query):
        """Send `query`; the future of its answer."""
        self.next_extra += 1
        extra = str(self.next_extra)
        future = self.loop.create_future()
        self.pending[extra] = future
        self.lib.td_send(self.client, json.dumps({**query, "@extra": extra}).encode())
        return future

    @staticmethod
    async def answer(future, timeout):
        """The answer, or an `error` object of our own after `timeout` s."""
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return {"@type": "error", "code": -1, "message": f"no answer within {timeout:g} s (test timeout)"}

    async def request(self, query, timeout):
        return await self.answer(self.submit(query), timeout)

    async def close(self, timeout):
        """Close the client (TDLib aborts the process if it exits with a client open)."""
        self.lib.td_send(self.client, json.dumps({"@type": "close"}).encode())
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
            closed = True
        except asyncio.TimeoutError:
            closed = False
        self.stop.set()
        await asyncio.to_thread(self.receiver.join, 2)
        return closed


@dataclasses.dataclass
class Ping:
    """One pingProxy: TDLib's answer and what the fake DC and the backend saw meanwhile."""

    answer: dict
    dc_connections: int
    inits: list  # (protocol tag hex, DC index)
    requests: list  # well-formed req_pq_multi the fake DC answered
    dc_errors: list
    backend: list  # fake_dc.BackendConnection opened meanwhile

    @property
    def backend_got(self):
        return [c.received for c in self.backend]


def describe(answer):
    if answer.get("@type") == "error":
        return f"error {answer.get('code')}: {answer.get('message')}"
    return json.dumps({k: v for k, v in answer.items() if k not in ("@extra", "@client_id")})


def fake_tls_digest_valid(record, secret):
    """PROTOCOL.md section 2: HMAC(secret, record with random zeroed) XOR random starts with
    28 zero bytes (the last 4 are the client's clock)."""
    if len(record) < 43:
        return False
    zeroed = record[:11] + bytes(32) + record[43:]
    mac = hmac.new(secret, zeroed, hashlib.sha256).digest()
    return all(m ^ r == 0 for m, r in zip(mac[:28], record[11:39]))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libtdjson", required=True, help="path of libtdjson.so")
    ap.add_argument("--proxy-port", type=int, required=True, help="frontgate with the defaults")
    ap.add_argument("--plain-port", type=int, required=True, help="frontgate with allow_plain: true")
    ap.add_argument("--dc-port", type=int, required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    ap.add_argument("--secret", required=True, help="32 hex chars (frontgate's user secret)")
    ap.add_argument("--disabled-secret", required=True, help="32 hex chars of a disabled user")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--timeout", type=float, default=20, help="seconds to wait for each answer")
    ap.add_argument("--label", default="", help="prefix for the check names")
    ap.add_argument("--tdlib-verbosity", type=int, default=0)
    ap.add_argument("--tdlib-log", help="file for TDLib's log (with --tdlib-verbosity > 0)")
    fake_dc.add_arguments(ap)
    args = ap.parse_args()
    checks = fake_dc.Checks(args.label)
    loop = asyncio.get_running_loop()

    upstream = None if args.mimic == "off" else args.upstream_port
    dc, backend, servers = await fake_dc.start(args.dc_port, args.backend_port, upstream)
    if not await fake_dc.ready_then_wait(args.ready_file, args.go_file):
        checks.fail("the shell started frontgate", f"no {args.go_file} within 30 s")
        return False
    secret = bytes.fromhex(args.secret)

    def tdlib_hello(data):
        """One TLS record: a ClientHello for --domain whose digest is valid for the secret."""
        records = fake_dc.tls_records(data)
        return (
            len(records) == 1
            and fake_dc.is_client_hello(records[0], args.domain)
            and fake_tls_digest_valid(records[0], secret)
        )

    await backend.settle()
    fake_dc.judge_probes(checks, args.mimic, list(backend.connections), args.probes, args.domain, tdlib_hello)

    td = Tdjson(args.libtdjson, loop)
    td.execute({"@type": "setLogVerbosityLevel", "new_verbosity_level": args.tdlib_verbosity})
    if args.tdlib_log and args.tdlib_verbosity > 0:
        td.execute(
            {
                "@type": "setLogStream",
                "log_stream": {"@type": "logStreamFile", "path": args.tdlib_log, "max_file_size": 1 << 26},
            }
        )
    td.start()
    version = await td.request({"@type": "getOption", "name": "version"}, args.timeout)
    print(f"# TDLib {version.get('value', describe(version))}", flush=True)

    database = tempfile.TemporaryDirectory(prefix="frontgate-tdlib-db.")
    setup = [
        {"@type": "setNetworkType", "type": {"@type": "networkTypeNone"}},
        {
            "@type": "setTdlibParameters",
            "use_test_dc": False,
            "database_directory": database.name,
            "files_directory": database.name,
            "use_file_database": False,
            "use_chat_info_database": False,
            "use_message_database": False,
            "use_secret_chats": False,
            "api_id": API_ID,
            "api_hash": API_HASH,
            "system_language_code": "en",
            "device_model": "frontgate-ci",
            "application_version": "1",
        },
    ]
    # TDLib answers requests made before setTdlibParameters only once it has the parameters.
    futures = [td.submit(query) for query in setup]
    for query, future in zip(setup, futures):
        answer = await td.answer(future, args.timeout)
        if answer.get("@type") != "ok":
            checks.fail(f"TDLib accepts {query['@type']}", describe(answer))
            await td.close(10)
            return False

    async def ping(port, secret):
        """pingProxy through 127.0.0.1:port: TDLib's answer and what the fake servers saw."""
        before = dc.connections, len(dc.inits), len(dc.requests), len(dc.errors), len(backend.received)
        print(f"# pingProxy 127.0.0.1:{port} secret {secret}", flush=True)
        started = time.monotonic()
        answer = await td.request(
            {
                "@type": "pingProxy",
                "proxy": {
                    "@type": "proxy",
                    "server": "127.0.0.1",
                    "port": port,
                    "type": {"@type": "proxyTypeMtproto", "secret": secret},
                },
            },
            args.timeout,
        )
        print(f"# answer after {time.monotonic() - started:.2f} s: {describe(answer)}", flush=True)
        await asyncio.sleep(0.3)  # let the fake servers finish with the connection
        await backend.settle(1)  # a mirror connection ends before the client is answered
        return Ping(
            answer,
            dc_connections=dc.connections - before[0],
            inits=[(tag.hex(), idx) for tag, idx in dc.inits[before[1] :]],
            requests=dc.requests[before[2] :],
            dc_errors=dc.errors[before[3] :],
            backend=backend.connections[before[4] :],
        )

    def judge_success(what, p, backend_may_get=False):
        """pingProxy answered after a resPQ; the backend got nothing unless `backend_may_get`
        (then fake_dc.judge_mirror judges what it got)."""
        if p.answer.get("@type") == "seconds" and p.requests and not p.dc_errors and (backend_may_get or not p.backend):
            checks.ok(
                f"{what} ({p.answer['seconds']:.4f} s; fake DC: inits {p.inits}, "
                f"{len(p.requests)} req_pq_multi answered)"
            )
        else:
            checks.fail(
                what,
                f"answer {describe(p.answer)}; fake DC connections {p.dc_connections}, inits {p.inits}, "
                f"req_pq_multi {len(p.requests)}, errors {p.dc_errors}; "
                f"backend connections {len(p.backend)}",
            )

    # ---------------------------------------------------------------- (1) ee-secret
    ee_secret = "ee" + args.secret + args.domain.encode().hex()
    p = await ping(args.proxy_port, ee_secret)
    judge_success("ee-secret (fake TLS): pingProxy answers seconds after the fake DC's resPQ", p, True)
    fake_dc.judge_mirror(checks, args.mimic, p.backend, tdlib_hello, "TDLib's hello")
    if args.mimic == "learned":
        p = await ping(args.proxy_port, ee_secret)
        judge_success("ee-secret again: pingProxy answers seconds after the fake DC's resPQ", p, True)
        fake_dc.judge_mirror(checks, args.mimic, p.backend, tdlib_hello, "TDLib's hello", learned_already=True)

    # ---------------------------------------------------------------- (2) dd-secret
    judge_success(
        "dd-secret with allow_plain: pingProxy answers seconds after the fake DC's resPQ",
        await ping(args.plain_port, "dd" + args.secret),
    )

    # ---------------------------------------------------------------- (3) wrong secret
    wrong = bytes(b ^ 0x5A for b in bytes.fromhex(args.secret))
    p = await ping(args.proxy_port, "ee" + wrong.hex() + args.domain.encode().hex())

    what = "wrong secret: pingProxy answers an error and nothing reaches the fake DC"
    if p.answer.get("@type") == "error" and p.answer.get("code") != -1 and p.dc_connections == 0:
        checks.ok(f"{what} ({describe(p.answer)})")
    else:
        checks.fail(what, f"answer {describe(p.answer)}; fake DC connections {p.dc_connections}")

    what = "wrong secret: the route's backend got TDLib's ClientHello, unchanged, on one connection"
    # The first record; with a real TLS server behind the backend TDLib may write more after
    # reading its answer (that is TDLib talking to the site, not frontgate).
    got = [(fake_dc.tls_records(g) or [g])[0] for g in p.backend_got]
    if len(got) == 1 and fake_dc.is_client_hello(got[0], args.domain) and fake_tls_digest_valid(got[0], wrong):
        checks.ok(
            f"{what} ({len(got[0])} bytes, SNI {args.domain}, digest valid for the wrong secret; "
            f"{fake_dc.describe_connection(p.backend[0])})"
        )
    else:
        checks.fail(
            what,
            f"backend connections {len(got)}, first bytes {[g[:16].hex() for g in got]}, "
            f"digest valid for the wrong secret: {[fake_tls_digest_valid(g, wrong) for g in got]}",
        )

    # ---------------------------------------------------------------- (4) disabled user
    p = await ping(args.proxy_port, "ee" + args.disabled_secret + args.domain.encode().hex())
    what = "disabled user's secret: pingProxy answers an error and nothing reaches the fake DC"
    if p.answer.get("@type") == "error" and p.answer.get("code") != -1 and p.dc_connections == 0:
        checks.ok(f"{what} ({describe(p.answer)})")
    else:
        checks.fail(what, f"answer {describe(p.answer)}; fake DC connections {p.dc_connections}")

    if not await td.close(10):
        print("# TDLib did not report authorizationStateClosed within 10 s", flush=True)
    for server in servers:
        server.close()
    database.cleanup()
    return checks.failed == 0


if __name__ == "__main__":
    passed = asyncio.run(main())
    sys.stdout.flush()
    # TDLib's threads may still be winding down: leave without running its static destructors.
    os._exit(0 if passed else 1)
