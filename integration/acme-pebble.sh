#!/usr/bin/env bash
# frontgate's ACME flow end to end: a `tls:` route with `acme:` gets a real certificate from
# Pebble over TLS-ALPN-01 (validated on frontgate's own listener) and a restart reuses it.
#
#   integration/acme-pebble.sh                  # uses target/release/frontgate (built if missing)
#   FRONTGATE=/path/to/frontgate integration/acme-pebble.sh
#   KEEP=1 integration/acme-pebble.sh           # keep the temp dir (configs, certs, logs)
#
# Needs: pebble + pebble-challtestsrv (Debian package `pebble`; .ci/run installs it), openssl,
# curl, python3. Loopback only; Pebble listens on 127.0.0.1:14000 (ACME) and :15000
# (management), the other ports are free high ports picked here; every process started
# here is killed on exit.
#
# 1. makes a CA and Pebble's HTTPS certificate (openssl); starts pebble-challtestsrv as the
#    DNS server (every name -> 127.0.0.1), Pebble (its VA validates TLS-ALPN-01 on
#    frontgate's port) and a plain HTTP backend (python3 http.server) with a unique body;
# 2. starts frontgate with one ACME route for $NAME, waits for issuance and fetches
#    https://$NAME:$FG/ with curl, trusting only Pebble's root;
# 3. restarts frontgate and checks it serves the cached certificate: Pebble sees no new
#    order and frontgate logs a cache load, not an issuance.
# Each check prints `ok   <what>` or `FAIL <what>`; the last line is
# `acme-pebble: N passed, M failed`; the exit status is non-zero if anything failed.

set -u
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=acme-pebble
# shellcheck source=integration/lib.sh
. "$ROOT/integration/lib.sh"
FRONTGATE="${FRONTGATE:-$ROOT/target/release/frontgate}"

NAME=panel.frontgate.test
PEBBLE_PORT=14000                 # ACME directory: https://127.0.0.1:14000/dir
PEBBLE_MGMT_PORT=15000            # roots: https://127.0.0.1:15000/roots/0
ACME_DIRECTORY="https://127.0.0.1:$PEBBLE_PORT/dir"
ISSUE_TIMEOUT=60                  # seconds for the first certificate
RESTART_TIMEOUT=20                # seconds for frontgate to serve again after a restart
STOP_TIMEOUT=10                   # seconds for frontgate to exit on SIGTERM

make_temp WORK frontgate-acme
FG_PID=
cleanup_on_exit # stops what this script started; KEEP=1 keeps the temp dir for a look

log() { printf '== %s\n' "$*"; }
plain() { sed 's/\x1b\[[0-9;]*m//g' "$@"; } # strip ANSI colours (in case a log has them)
tails() {
    local f
    for f in pebble.log challtestsrv.log backend.log frontgate.log frontgate2.log; do
        [ -s "$WORK/$f" ] && { echo "---- tail $f"; tail -n 25 "$WORK/$f" | plain; }
    done
}
die() { fail "$*"; tails; finish; }

# ---------------------------------------------------------------- tools and binary
for tool in pebble pebble-challtestsrv openssl curl python3; do
    command -v "$tool" >/dev/null ||
        die "missing $tool (apt-get update && apt-get install -y pebble openssl curl python3)"
done
if [ ! -x "$FRONTGATE" ]; then
    log "building $FRONTGATE"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    [ -x "$FRONTGATE" ] || die "$FRONTGATE still missing after cargo build --release"
fi
FRONTGATE="$(cd "$(dirname "$FRONTGATE")" && pwd)/$(basename "$FRONTGATE")"

# ---------------------------------------------------------------- ports (loopback only)
for p in $PEBBLE_PORT $PEBBLE_MGMT_PORT; do
    port_busy "$p" && die "port $p (Pebble) already in use"
done
port FG              # frontgate's listener = Pebble's tlsPort (TLS-ALPN-01 validation)
port BACKEND         # the plain HTTP backend behind the route
port HTTP01          # unused (no HTTP-01 here) but Pebble wants one
port DNS udp         # pebble-challtestsrv's DNS (UDP and TCP)
port CHALLTEST_MGMT

fetch() { # prints the body served for https://$NAME:$FG/, trusting only Pebble's root
    curl -sS --noproxy '*' --max-time 5 --cacert "$WORK/pebble-root.pem" \
        --resolve "$NAME:$FG:127.0.0.1" "$@" "https://$NAME:$FG/"
}
fetch_expected() { [ "$(fetch 2>/dev/null)" = "$EXPECTED_BODY" ]; }
served_cert() { # the SHA-256 fingerprint of the certificate frontgate serves for $NAME
    openssl s_client -connect "127.0.0.1:$FG" -servername "$NAME" </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2
}
# Orders Pebble has accepted so far, from its request log.
orders() { grep -c 'POST /order-plz' "$WORK/pebble.log"; }

start_frontgate() { # $1: log file (frontgate logs to stderr)
    "$FRONTGATE" run --config "$WORK/routes.yaml" >"$1" 2>&1 &
    FG_PID=$!
    PIDS+=("$FG_PID")
}
stop_frontgate() { # SIGTERM, then wait; 0 if it exited in time
    local deadline=$((SECONDS + STOP_TIMEOUT))
    kill -TERM "$FG_PID" 2>/dev/null
    while kill -0 "$FG_PID" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -9 "$FG_PID" 2>/dev/null
            wait "$FG_PID" 2>/dev/null
            return 1
        fi
        sleep 0.1
    done
    wait "$FG_PID" 2>/dev/null
    return 0
}

# ---------------------------------------------------------------- Pebble's PKI and config
log "CA and Pebble's HTTPS certificate in $WORK"
(
    cd "$WORK" || exit 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=frontgate acme-pebble test CA" -keyout pebble-ca.key -out pebble-ca.pem \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null || exit 1
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout pebble.key -out pebble.csr 2>/dev/null || exit 1
    printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=critical,CA:FALSE' \
        'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >pebble.ext
    openssl x509 -req -in pebble.csr -CA pebble-ca.pem -CAkey pebble-ca.key -set_serial 1 \
        -days 2 -extfile pebble.ext -out pebble.pem 2>/dev/null || exit 1
) || die "generating Pebble's certificate failed"

cat >"$WORK/pebble.json" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$PEBBLE_PORT",
    "managementListenAddress": "127.0.0.1:$PEBBLE_MGMT_PORT",
    "certificate": "$WORK/pebble.pem",
    "privateKey": "$WORK/pebble.key",
    "httpPort": $HTTP01,
    "tlsPort": $FG,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF

# ---------------------------------------------------------------- the backend
EXPECTED_BODY="frontgate acme-pebble backend $$-$RANDOM$RANDOM"
mkdir -p "$WORK/www"
printf '%s' "$EXPECTED_BODY" >"$WORK/www/index.html"

# ---------------------------------------------------------------- the route file
cat >"$WORK/routes.yaml" <<EOF
listen: 127.0.0.1:$FG          # Pebble's tlsPort is this port
timeouts:
  shutdown_grace: 3s
routes:
  - sni: $NAME
    tls:
      acme: { contact: admin@frontgate.test, directory: $ACME_DIRECTORY, cache: $WORK/acme, ca_roots: $WORK/pebble-ca.pem }
      alpn: [http/1.1]         # the backend speaks HTTP/1.1 only (the default offers h2 too)
    to: 127.0.0.1:$BACKEND
EOF
if out="$("$FRONTGATE" check --config "$WORK/routes.yaml" 2>&1)"; then
    ok "frontgate check accepts the ACME route file"
else
    die "frontgate check rejects the route file (a binary without tls: support? rebuild it): $out"
fi

# ---------------------------------------------------------------- start the peers
log "pebble-challtestsrv (DNS 127.0.0.1:$DNS: every name -> 127.0.0.1)"
pebble-challtestsrv -dns01 "127.0.0.1:$DNS" -http01 "" -https01 "" -tlsalpn01 "" \
    -management "127.0.0.1:$CHALLTEST_MGMT" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    >"$WORK/challtestsrv.log" 2>&1 &
PIDS+=("$!")

log "pebble (ACME at $ACME_DIRECTORY, TLS-ALPN-01 on 127.0.0.1:$FG)"
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
    pebble -config "$WORK/pebble.json" -dnsserver "127.0.0.1:$DNS" >"$WORK/pebble.log" 2>&1 &
PIDS+=("$!")

log "backend (python3 http.server on 127.0.0.1:$BACKEND)"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$BACKEND" >"$WORK/backend.log" 2>&1 &
PIDS+=("$!")

wait_until 30 curl -sSf --noproxy '*' --cacert "$WORK/pebble-ca.pem" "$ACME_DIRECTORY" ||
    die "pebble did not come up"
curl -sSf --noproxy '*' --cacert "$WORK/pebble-ca.pem" \
    "https://127.0.0.1:$PEBBLE_MGMT_PORT/roots/0" >"$WORK/pebble-root.pem" ||
    die "cannot fetch Pebble's root"
wait_port "$BACKEND" 10 || die "backend did not come up"
[ "$(curl -sS --noproxy '*' --max-time 5 "http://127.0.0.1:$BACKEND/")" = "$EXPECTED_BODY" ] ||
    die "backend does not serve the expected body"
ok "pebble, challtestsrv and the backend are up"

# ---------------------------------------------------------------- first start: issuance
log "first start: frontgate must obtain a certificate"
start_frontgate "$WORK/frontgate.log"
wait_port "$FG" 10 || die "frontgate is not listening on 127.0.0.1:$FG"
if wait_until "$ISSUE_TIMEOUT" fetch_expected; then
    ok "certificate issued and served within ${ISSUE_TIMEOUT}s"
else
    die "no working certificate within ${ISSUE_TIMEOUT}s; last curl: $(fetch 2>&1)"
fi
body="$(fetch 2>&1)"
if [ "$body" = "$EXPECTED_BODY" ]; then ok "curl through frontgate got the backend's body"; else fail "curl through frontgate got: $body"; fi
alpn="$(openssl s_client -connect "127.0.0.1:$FG" -servername "$NAME" -alpn h2,http/1.1 </dev/null 2>/dev/null |
    grep -E '^ALPN protocol|^No ALPN')"
if [ "$alpn" = "ALPN protocol: http/1.1" ]; then ok "ALPN: http/1.1 chosen over h2, as configured"; else fail "ALPN offering h2,http/1.1: '$alpn', expected http/1.1 (alpn: [http/1.1])"; fi
cert1="$(served_cert)"
issuer="$(openssl s_client -connect "127.0.0.1:$FG" -servername "$NAME" </dev/null 2>/dev/null |
    openssl x509 -noout -issuer -ext subjectAltName 2>/dev/null | tr '\n' ' ')"
if [[ "$issuer" == *Pebble* && "$issuer" == *"DNS:$NAME"* ]]; then
    ok "served certificate is Pebble's, for $NAME"
else
    fail "served certificate: $issuer"
fi

sleep 0.5 # the connection lines are written when the connections end
plain "$WORK/frontgate.log" >"$WORK/frontgate.plain"
if grep -q 'ACME: certificate issued' "$WORK/frontgate.plain"; then ok "frontgate logged the issuance"; else fail "no 'ACME: certificate issued' line in frontgate's log"; fi
# No `grep -q` at the end of these pipelines: it exits on the first match and, with pipefail,
# the grep before it dying of SIGPIPE would turn a match into a failure.
if grep 'connection closed' "$WORK/frontgate.plain" | grep 'outcome=acme_challenge_answered' >/dev/null; then
    ok "the TLS-ALPN-01 validation was answered on frontgate's listener"
else
    fail "no 'outcome=acme_challenge_answered' connection line in frontgate's log"
fi
if grep 'connection closed' "$WORK/frontgate.plain" | grep -E "sni=\"?$NAME\"? " | grep "backend=127.0.0.1:$BACKEND" | grep 'outcome=closed' >/dev/null; then
    ok "frontgate logged the relayed connection (sni=$NAME backend=127.0.0.1:$BACKEND outcome=closed)"
else
    fail "no 'connection closed ... sni=$NAME ... backend=127.0.0.1:$BACKEND ... outcome=closed' line in frontgate's log"
fi
orders_before="$(orders)"
if [ "$orders_before" -ge 1 ]; then ok "pebble saw $orders_before order(s)"; else fail "pebble's log shows no order (log format changed?)"; fi
if [ -n "$(ls -A "$WORK/acme" 2>/dev/null)" ]; then
    ok "ACME cache filled: $(ls "$WORK/acme" | tr '\n' ' ')"
else
    fail "ACME cache directory $WORK/acme is empty"
fi

# ---------------------------------------------------------------- restart: cache reuse
log "restart: the cached certificate must be reused"
if stop_frontgate; then ok "frontgate exited on SIGTERM within ${STOP_TIMEOUT}s"; else fail "frontgate still running ${STOP_TIMEOUT}s after SIGTERM (killed)"; fi
start_frontgate "$WORK/frontgate2.log"
wait_until "$RESTART_TIMEOUT" fetch_expected || die "frontgate did not serve within ${RESTART_TIMEOUT}s of the restart; last curl: $(fetch 2>&1)"
body="$(fetch 2>&1)"
if [ "$body" = "$EXPECTED_BODY" ]; then ok "curl after the restart got the backend's body"; else fail "curl after the restart got: $body"; fi
cert2="$(served_cert)"
if [ -n "$cert1" ] && [ "$cert1" = "$cert2" ]; then ok "same certificate served after the restart"; else fail "certificate changed across the restart: '$cert1' -> '$cert2'"; fi
sleep 2 # give a (wrong) new order time to show up in Pebble's log
orders_after="$(orders)"
if [ "$orders_after" -eq "$orders_before" ]; then
    ok "no new order at pebble after the restart ($orders_after in total)"
else
    fail "pebble saw new orders after the restart: $orders_before -> $orders_after"
fi
plain "$WORK/frontgate2.log" >"$WORK/frontgate2.plain"
if grep -q 'ACME: certificate loaded from cache' "$WORK/frontgate2.plain"; then ok "frontgate logged the cache load"; else fail "no 'ACME: certificate loaded from cache' line in frontgate's log after the restart"; fi
if ! grep -q 'ACME: certificate issued' "$WORK/frontgate2.plain"; then ok "frontgate did not issue again"; else fail "frontgate issued again after the restart"; fi
if stop_frontgate; then ok "frontgate exited on SIGTERM after the restart"; else fail "frontgate still running ${STOP_TIMEOUT}s after the second SIGTERM (killed)"; fi

log "frontgate log tails"
for f in frontgate.plain frontgate2.plain; do echo "---- $f"; tail -n 4 "$WORK/$f"; done
finish
