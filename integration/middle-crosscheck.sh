#!/usr/bin/env bash
# Cross-check of the test kit's fake Telegram middle proxy (tests/common/kit fake_middle)
# against a reference client: the PyPI mtprotoproxy, with AD_TAG set, must complete the ME
# handshake with it and relay a client's messages through it; then frontgate (ME mode) does
# the same through the same fake ME. The fake checks the flags, both addresses and the ad_tag
# of every RPC_PROXY_REQ; its report must show the tag and no failed check for both proxies.
# So the fake is not tuned to frontgate's own reading of the protocol.
#
#   integration/middle-crosscheck.sh           # target/release/frontgate (built if missing)
#   FRONTGATE=/path/to/frontgate integration/middle-crosscheck.sh
#   MTPP_VENV=/venv ...   venv with mtprotoproxy + cryptography (created with pip if missing)
#   KEEP=1 ...            keep the temp dir (configs, logs)
#
# mtprotoproxy 1.0.6 fetches its middle-proxy list and secret from core.telegram.org with
# URLs fixed in its code: the launcher below imports the unmodified module and replaces its
# make_https_req with a plain-HTTP GET of the same paths on the fake's config server
# (loopback), skips the public-IP lookup (the key derivation then uses the local address, as
# the fake sees it) and starts its handle_client_wrapper on loopback.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SUITE=middle-crosscheck
# shellcheck source=integration/lib.sh
. "$HERE/lib.sh"
set -u
cleanup_on_exit
make_temp T frontgate-middle

FRONTGATE="${FRONTGATE:-$ROOT/target/release/frontgate}"
MTPP_VENV="${MTPP_VENV:-/tmp/frontgate-bench-mtproto-venv}"
export CARGO_TARGET_DIR="${MIDDLE_TARGET_DIR:-/tmp/frontgate-middle-target}"
TAG=3c09c680b76ee91a4c25ad51f742267d
SECRET=0123456789abcdef0123456789abcdef
DOMAIN=storage.googleapis.com # the SNI of the recorded hello echo.py re-signs (never resolved)

[ -x "$FRONTGATE" ] || (cd "$ROOT" && cargo build --release --quiet) || { fail "frontgate build"; finish; }
if [ ! -x "$MTPP_VENV/bin/python" ] || [ ! -f "$MTPP_VENV/bin/mtprotoproxy.py" ] ||
    ! "$MTPP_VENV/bin/python" -c 'import cryptography' 2>/dev/null; then
    python3 -m venv "$MTPP_VENV" && "$MTPP_VENV/bin/pip" install --quiet --disable-pip-version-check \
        mtprotoproxy cryptography || { fail "pip install mtprotoproxy cryptography"; finish; }
fi
cargo build --release --quiet --manifest-path "$HERE/bench-mtproto-client/Cargo.toml" ||
    { fail "bench-mtproto-client build"; finish; }
KIT="$CARGO_TARGET_DIR/release/bench-mtproto-client"

"$KIT" middle >"$T/me.out" 2>"$T/me.err" &
PIDS+=("$!")
for _ in $(seq 100); do grep -q '^ready ' "$T/me.out" && break; sleep 0.1; done
ready=$(grep '^ready ' "$T/me.out") || { fail "fake middle proxy starts" "$(cat "$T/me.err")"; finish; }
CONFIG_URL=$(sed -n 's/.* config=\([^ ]*\).*/\1/p' <<<"$ready")
ok "fake middle proxy and config server on loopback ($CONFIG_URL)"

# ------------------------------------------------------------------ mtprotoproxy
port MP_PORT
cat >"$T/mtpp.py" <<CONF
PORT = $MP_PORT
USERS = {"check": "$SECRET"}
AD_TAG = "$TAG"
USE_MIDDLE_PROXY = True
TLS_ONLY = True
TLS_DOMAIN = "$DOMAIN"
MASK = False
MASK_HOST = "127.0.0.1"
PREFER_IPV6 = False
LISTEN_ADDR_IPV4 = "127.0.0.1"
LISTEN_ADDR_IPV6 = ""
STATS_PRINT_PERIOD = 86400
PROXY_INFO_UPDATE_PERIOD = 86400
CONF
cat >"$T/run_mtprotoproxy.py" <<'PY'
import asyncio
import importlib.util
import sys
import urllib.parse
import urllib.request

script, config_path, config_url = sys.argv[1], sys.argv[2], sys.argv[3]
sys.argv = [script, config_path]
spec = importlib.util.spec_from_file_location("mtprotoproxy", script)
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)


async def loopback_req(url, host="core.telegram.org"):
    path = urllib.parse.urlparse(url).path
    with urllib.request.urlopen(config_url + path, timeout=5) as answer:
        return b"", answer.read()


m.make_https_req = loopback_req
m.init_config()
m.init_stats()
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
loop.set_exception_handler(m.loop_exception_handler)
loop.create_task(m.update_middle_proxy_info())


async def wait_for_list():
    for _ in range(100):
        if m.TG_MIDDLE_PROXIES_V4.get(2, [("", 0)])[0][0] == "127.0.0.1":
            return
        await asyncio.sleep(0.05)
    raise SystemExit("the middle-proxy list was never fetched from the config server")


loop.run_until_complete(wait_for_list())
server = loop.run_until_complete(asyncio.start_server(
    m.handle_client_wrapper, "127.0.0.1", m.config.PORT, limit=m.get_to_tg_bufsize()))
print("mtprotoproxy on 127.0.0.1:%d AD_TAG=%s" % (m.config.PORT, m.config.AD_TAG.hex()), flush=True)
loop.run_forever()
PY
"$MTPP_VENV/bin/python" "$T/run_mtprotoproxy.py" "$MTPP_VENV/bin/mtprotoproxy.py" "$T/mtpp.py" "$CONFIG_URL" \
    >"$T/mtpp.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do grep -q '^mtprotoproxy on' "$T/mtpp.log" && break; sleep 0.1; done
if grep -q '^mtprotoproxy on' "$T/mtpp.log"; then
    ok "mtprotoproxy fetched the fake's config over loopback and listens"
else
    fail "mtprotoproxy starts" "$(tail -5 "$T/mtpp.log")"
fi

# Each proxy's requests as the fake ME reported them (new lines since `from`).
requests_since() { tail -n +"$(($1 + 1))" "$T/me.out" | grep '^req '; }
check_requests() { # check_requests WHO FROM_LINE
    local seen
    seen=$(requests_since "$2")
    if [ -z "$seen" ]; then
        fail "$1: the fake ME saw its RPC_PROXY_REQs" "none"
    elif grep -v "ad_tag=$TAG .*problems=\[\]" <<<"$seen" >/dev/null; then
        fail "$1: every RPC_PROXY_REQ passes the fake's checks" "$(grep -v "problems=\[\]" <<<"$seen" | head -3)"
    else
        ok "$1: $(wc -l <<<"$seen") sessions' RPC_PROXY_REQs carry the ad_tag, both addresses and the flags check out"
    fi
}

from=$(wc -l <"$T/me.out")
out=$("$MTPP_VENV/bin/python" "$HERE/middle/echo.py" --port "$MP_PORT" --secret "$SECRET" --sessions 3 2>&1)
if [ "$out" = "ok 3 sessions" ]; then
    ok "mtprotoproxy relays 3 sessions' messages through the fake ME"
else
    fail "mtprotoproxy relays through the fake ME" "$out $(tail -5 "$T/mtpp.log")"
fi
check_requests mtprotoproxy "$from"

# ------------------------------------------------------------------ frontgate
port FG_PORT
port SITE_PORT
cat >"$T/frontgate.yaml" <<YAML
listen: 127.0.0.1:$FG_PORT
mtproto:
  users: { check: $SECRET }
  ad_tag: $TAG
  middle_proxy:
    secret_url: $CONFIG_URL/getProxySecret
    config_url: $CONFIG_URL/getProxyConfig
    config_v6_url: $CONFIG_URL/getProxyConfigV6
    fallback_direct: false
routes:
  - sni: $DOMAIN
    mtproto: true
    mimic: off
    to: 127.0.0.1:$SITE_PORT
YAML
"$FRONTGATE" run --config "$T/frontgate.yaml" >"$T/frontgate.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$FG_PORT") 2>/dev/null && break; sleep 0.1; done
from=$(wc -l <"$T/me.out")
out=$("$MTPP_VENV/bin/python" "$HERE/middle/echo.py" --port "$FG_PORT" --secret "$SECRET" --sessions 3 2>&1)
if [ "$out" = "ok 3 sessions" ]; then
    ok "frontgate relays 3 sessions' messages through the same fake ME"
else
    fail "frontgate relays through the fake ME" "$out $(tail -5 "$T/frontgate.log")"
fi
check_requests frontgate "$from"
finish
