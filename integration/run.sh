#!/usr/bin/env bash
# frontgate against real peers: nginx (TLS backends, PROXY-protocol receivers), HAProxy (a
# PROXY v2 sender in front of frontgate), curl and openssl s_client as clients.
#
#   integration/run.sh                   # uses target/release/frontgate (built if missing)
#   FRONTGATE=/path/to/frontgate integration/run.sh
#   KEEP=1 integration/run.sh            # keep the temp dir (configs, certs, logs) for a look
#
# Needs: nginx (Debian nginx-full: http ssl + realip), haproxy, curl, openssl. Loopback only,
# unprivileged random high ports, every process started here is killed on exit.
# Each check prints `ok   <what>` or `FAIL <what>: <details>`; the last line is
# `integration: N passed, M failed`; the exit status is non-zero if M > 0.

set -u
set -o pipefail
export PATH="$PATH:/usr/sbin:/sbin"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=integration
# shellcheck source=integration/lib.sh
. "$ROOT/integration/lib.sh"
FRONTGATE="${FRONTGATE:-$ROOT/target/release/frontgate}"

for tool in nginx haproxy curl openssl; do
    command -v "$tool" >/dev/null || { echo "integration: $tool is not installed" >&2; exit 2; }
done
if [ ! -x "$FRONTGATE" ]; then
    echo "building $FRONTGATE ..."
    (cd "$ROOT" && cargo build --release --quiet) || { echo "integration: build failed" >&2; exit 2; }
fi
FRONTGATE="$(cd "$(dirname "$FRONTGATE")" && pwd)/$(basename "$FRONTGATE")"

make_temp T frontgate-it
# nginx workers may run as another user (when started as root): they must read the doc root.
chmod 755 "$T"
cleanup_on_exit

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
    if [ "$2" == "$3" ]; then ok "$1"; else fail "$1" "expected '$2', got '$3'"; fi
}
# expect_match WHAT EXTENDED-REGEX ACTUAL
expect_match() {
    if [[ "$3" =~ $2 ]]; then ok "$1"; else fail "$1" "expected to match /$2/, got '$3'"; fi
}

# ---------------------------------------------------------------- ports (loopback only)
# Free on 127.0.0.1 and ::1, below the ephemeral range (lib.sh: port).
for name in FG FG2 HA P_A P_B P_C P_W P_D P_PP1 P_PP2 P_HA P_R1 P_R2 P_DEAD; do port "$name"; done

# grows COUNTER-FUNCTION N: the counter (re-evaluated on every poll) is now above N.
grows() { [ "$("$1")" -gt "$2" ]; }

IPV6=0
if grep -qE '^0{31}1 .* lo$' /proc/net/if_inet6 2>/dev/null; then IPV6=1; fi

# ---------------------------------------------------------------- test PKI
PKI="$T/pki"
mkdir -p "$PKI"
(
    cd "$PKI" || exit 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 2 -subj "/O=frontgate-it/CN=frontgate test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null || exit 1
    leaf() { # leaf NAME CN SAN
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$1.key" -out "$1.csr" -subj "/O=frontgate-it/CN=$2" 2>/dev/null || exit 1
        printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$3" >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile "$1.ext" -out "$1.pem" 2>/dev/null || exit 1
    }
    leaf a a.test DNS:a.test
    leaf b b.test DNS:b.test
    leaf c c.test DNS:c.test
    leaf w wildcard.w.test 'DNS:*.w.test,DNS:*.x.w.test'
    leaf d default.test 'DNS:default.test,IP:127.0.0.1'
    leaf pp1 pp1.test DNS:pp1.test
    leaf pp2 pp2.test DNS:pp2.test
    leaf ha ha.test DNS:ha.test
    leaf r1 r1.test 'DNS:r.test,DNS:r1.test'
    leaf r2 r2.test 'DNS:r.test,DNS:r2.test'
) || { echo "integration: generating the test PKI failed" >&2; exit 2; }
CA="$PKI/ca.pem"

# ---------------------------------------------------------------- nginx: the TLS backends
mkdir -p "$T/nginx/logs" "$T/www"
chmod 755 "$T/nginx" "$T/www"
BIG_SIZE=$((3 * 1024 * 1024))
head -c "$BIG_SIZE" /dev/urandom >"$T/www/big"
chmod 644 "$T/www/big"
BIG_SHA="$(sha256sum "$T/www/big" | cut -d' ' -f1)"

server() { # server NAME PORT [LISTEN-EXTRA]
    cat <<EOF
    server {
        listen 127.0.0.1:$2 ssl ${3:-};
        ssl_certificate $PKI/$1.pem;
        ssl_certificate_key $PKI/$1.key;
        access_log $T/nginx/logs/$1.access.log pp;
        add_header X-Backend $1 always;
        location = /big { root $T/www; }
        location / { return 200 "backend-$1 uri=\$request_uri host=\$host\n"; }
    }
EOF
}
cat >"$T/nginx/nginx.conf" <<EOF
$(nginx_main "$T/nginx/nginx.pid" "$T/nginx/logs/error.log" warn 1024)
http {
    default_type text/plain;
    $(nginx_temp_paths "$T/nginx")
    ssl_protocols TLSv1.2 TLSv1.3;
    # The client address as the PROXY header carried it, and as realip made it \$remote_addr.
    log_format pp '\$proxy_protocol_addr \$remote_addr \$request_uri';
    set_real_ip_from 127.0.0.1;
    set_real_ip_from ::1;
$(server a "$P_A")
$(server b "$P_B")
$(server c "$P_C")
$(server w "$P_W")
$(server d "$P_D")
$(server r1 "$P_R1")
$(server r2 "$P_R2")
$(server pp1 "$P_PP1" proxy_protocol | sed 's/^\(\s*\)add_header/\1real_ip_header proxy_protocol;\n\1add_header/')
$(server pp2 "$P_PP2" proxy_protocol | sed 's/^\(\s*\)add_header/\1real_ip_header proxy_protocol;\n\1add_header/')
$(server ha "$P_HA" proxy_protocol | sed 's/^\(\s*\)add_header/\1real_ip_header proxy_protocol;\n\1add_header/')
}
EOF
if ! nginx -t -q -p "$T/nginx/" -e "$T/nginx/logs/error.log" -c "$T/nginx/nginx.conf" 2>"$T/nginx/t.err"; then
    echo "integration: nginx rejected its test config:" >&2
    cat "$T/nginx/t.err" >&2
    exit 2
fi
nginx -p "$T/nginx/" -e "$T/nginx/logs/error.log" -c "$T/nginx/nginx.conf" 2>>"$T/nginx/logs/error.log" &
PIDS+=("$!")

# ---------------------------------------------------------------- frontgate
fg_config() { # fg_config R-BACKEND-PORT
    cat <<EOF
listen:
  - 127.0.0.1:$FG
$([ "$IPV6" = 1 ] && echo "  - \"[::1]:$FG\"")
timeouts:
  client_hello: 5s
  connect: 2s
  idle: 60s
routes:
  - sni: a.test
    to: 127.0.0.1:$P_A
  - sni: b.test
    to: 127.0.0.1:$P_B
  - sni: c.test                 # first backend refuses: failover to the second
    to: [127.0.0.1:$P_DEAD, 127.0.0.1:$P_C]
  - sni: "*.w.test"
    to: 127.0.0.1:$P_W
  - sni: pp1.test
    to: 127.0.0.1:$P_PP1
    proxy_protocol: v1
  - sni: pp2.test
    to: 127.0.0.1:$P_PP2
    proxy_protocol: v2
  - sni: r.test
    to: 127.0.0.1:$1
default:
  to: 127.0.0.1:$P_D
EOF
}
mkdir -p "$T/fg"
fg_config "$P_R1" >"$T/fg/routes.yaml"
FG_LOG="$T/fg/frontgate.log"
"$FRONTGATE" run --config "$T/fg/routes.yaml" >"$FG_LOG" 2>&1 &
FG_PID=$!
PIDS+=("$FG_PID")

# The second frontgate, behind HAProxy: trusts 127.0.0.1 to send PROXY headers.
cat >"$T/fg/behind-haproxy.yaml" <<EOF
listen:
  - 127.0.0.1:$FG2
accept_proxy_protocol_from: [127.0.0.1/32]
routes:
  - sni: ha.test
    to: 127.0.0.1:$P_HA
    proxy_protocol: v2
EOF
FG2_LOG="$T/fg/frontgate2.log"
"$FRONTGATE" run --config "$T/fg/behind-haproxy.yaml" >"$FG2_LOG" 2>&1 &
PIDS+=("$!")

# ---------------------------------------------------------------- haproxy -> frontgate #2
cat >"$T/haproxy.cfg" <<EOF
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend edge
    bind 127.0.0.1:$HA
    default_backend frontgate
backend frontgate
    server fg2 127.0.0.1:$FG2 send-proxy-v2
EOF
haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
PIDS+=("$!")

for p in "$P_A" "$P_PP2" "$P_HA" "$FG" "$FG2" "$HA"; do
    if ! wait_port "$p" 10; then
        echo "integration: nothing listens on 127.0.0.1:$p after 10 s; logs:" >&2
        tail -n 20 "$T"/nginx/logs/error.log "$FG_LOG" "$FG2_LOG" "$T/haproxy.log" >&2
        exit 2
    fi
done
if [ "$IPV6" = 1 ] && ! wait_port "$FG" 5 ::1; then
    echo "integration: frontgate does not listen on [::1]:$FG" >&2
    exit 2
fi

# ---------------------------------------------------------------- client helpers
# get NAME [curl args...]: body of https://NAME:$FG/ reached through 127.0.0.1, verified by the CA.
get() {
    local name=$1
    shift
    curl -sS --max-time 10 --cacert "$CA" --resolve "$name:$FG:127.0.0.1" "$@" "https://$name:$FG/" 2>&1
}
# subject ADDR PORT [s_client args...]: CN of the certificate the server presented, plus
# `verify=N` (0 = chain verified against the test CA).
subject() {
    local addr=$1 port=$2 out cn verify
    shift 2
    out="$(timeout 10 openssl s_client -connect "$addr:$port" -CAfile "$CA" "$@" </dev/null 2>/dev/null)"
    cn="$(printf '%s\n' "$out" | openssl x509 -noout -subject 2>/dev/null | sed -n 's/.*CN *= *//p')"
    verify="$(printf '%s\n' "$out" | sed -n 's/^ *Verify return code: \([0-9]*\).*/\1/p' | head -n1)"
    echo "cn=${cn:-none} verify=${verify:-none}"
}

echo "frontgate $("$FRONTGATE" --version 2>/dev/null) | $(nginx -v 2>&1) | $(haproxy -v | head -n1 | cut -d' ' -f1-3) | temp $T"

# ---------------------------------------------------------------- 1. frontgate check
"$FRONTGATE" check --config "$T/fg/routes.yaml" >"$T/check.out" 2>&1
expect_eq "check: a valid route file exits 0" 0 $?
cat >"$T/fg/broken.yaml" <<EOF
listen:
  - 127.0.0.1:$FG
routes:
  - sni: a.test
    to: 127.0.0.1:$P_A
    proxy_protocol: v3
EOF
"$FRONTGATE" check --config "$T/fg/broken.yaml" >"$T/check-broken.out" 2>&1
expect_eq "check: a broken route file exits 1" 1 $?
expect_match "check: the error names file:line:col of the bad value" \
    "$T/fg/broken\.yaml:6:[0-9]+: .*proxy_protocol" "$(head -n1 "$T/check-broken.out")"
printf 'listen: [127.0.0.1:%s\nroutes: []\n' "$FG" >"$T/fg/broken-yaml.yaml"
"$FRONTGATE" check --config "$T/fg/broken-yaml.yaml" >"$T/check-broken2.out" 2>&1
rc=$?
expect_match "check: a YAML syntax error exits 1 with file:line:col" \
    "^1 .*broken-yaml\.yaml:[0-9]+:[0-9]+: " "$rc $(head -n1 "$T/check-broken2.out")"

# ---------------------------------------------------------------- 2. SNI routing to three names
for n in a b c; do
    expect_eq "route $n.test: curl gets $n's nginx body" \
        "backend-$n uri=/ host=$n.test" "$(get "$n.test")"
    expect_eq "route $n.test: openssl s_client sees $n's certificate" \
        "cn=$n.test verify=0" "$(subject 127.0.0.1 "$FG" -servername "$n.test")"
done
expect_match "route c.test: the refused first backend was skipped (log shows the second)" \
    "sni=\"c\.test\".* backend=127\.0\.0\.1:$P_C " "$(grep 'sni="c.test"' "$FG_LOG" | tail -n1)"
expect_eq "route names match case-insensitively (SNI B.TEST)" \
    "cn=b.test verify=0" "$(subject 127.0.0.1 "$FG" -servername B.TEST)"

# wildcard
expect_eq "wildcard *.w.test: x.w.test gets the wildcard backend" \
    "backend-w uri=/ host=x.w.test" "$(get x.w.test)"
expect_eq "wildcard *.w.test: deeper a.x.w.test too" \
    "backend-w uri=/ host=a.x.w.test" "$(get a.x.w.test)"
expect_eq "wildcard *.w.test: s_client sees the wildcard certificate" \
    "cn=wildcard.w.test verify=0" "$(subject 127.0.0.1 "$FG" -servername y.w.test)"
expect_eq "wildcard *.w.test does not match w.test itself (goes to default)" \
    "cn=default.test verify=0" "$(subject 127.0.0.1 "$FG" -servername w.test)"

# default route
expect_eq "default route: no SNI (s_client -noservername)" \
    "cn=default.test verify=0" "$(subject 127.0.0.1 "$FG" -noservername)"
expect_eq "default route: no SNI (curl to an IP literal)" \
    "backend-d uri=/ host=127.0.0.1" \
    "$(curl -sS --max-time 10 --cacert "$CA" "https://127.0.0.1:$FG/" 2>&1)"
expect_eq "default route: unknown SNI" \
    "cn=default.test verify=0" "$(subject 127.0.0.1 "$FG" -servername unknown.test)"
expect_eq "default route: unknown SNI, curl body" \
    "backend-d uri=/ host=nope.test" "$(get nope.test -k)"

# ---------------------------------------------------------------- 3. outbound PROXY protocol
# The log line of one request: `$proxy_protocol_addr $remote_addr $request_uri`.
log_line() { # log_line BACKEND URI
    wait_until 3 grep -q " $2\$" "$T/nginx/logs/$1.access.log"
    grep " $2\$" "$T/nginx/logs/$1.access.log" | tail -n1
}
for v in 1 2; do
    uri="/v$v-ipv4-$RANDOM"
    body="$(curl -sS --max-time 10 --cacert "$CA" --resolve "pp$v.test:$FG:127.0.0.1" "https://pp$v.test:$FG$uri" 2>&1)"
    expect_eq "PROXY v$v route: nginx (listen ... proxy_protocol) answers through frontgate" \
        "backend-pp$v uri=$uri host=pp$v.test" "$body"
    expect_eq "PROXY v$v route: nginx logs the IPv4 client from the header" \
        "127.0.0.1 127.0.0.1 $uri" "$(log_line "pp$v" "$uri")"
    if [ "$IPV6" = 1 ]; then
        uri="/v$v-ipv6-$RANDOM"
        body="$(curl -sS --max-time 10 --cacert "$CA" --resolve "pp$v.test:$FG:[::1]" "https://pp$v.test:$FG$uri" 2>&1)"
        expect_eq "PROXY v$v route, IPv6 client [::1]: request served" \
            "backend-pp$v uri=$uri host=pp$v.test" "$body"
        expect_eq "PROXY v$v route, IPv6 client [::1]: nginx logs ::1 from the header" \
            "::1 ::1 $uri" "$(log_line "pp$v" "$uri")"
    else
        echo "skip PROXY v$v IPv6 client: no ::1 on lo"
    fi
done
# A route without proxy_protocol must send none: the plain nginx would fail the handshake.
expect_eq "route without proxy_protocol sends no header (plain nginx logs '-')" \
    "- 127.0.0.1 /plain-$$" \
    "$(curl -sS --max-time 10 --cacert "$CA" --resolve "a.test:$FG:127.0.0.1" -o /dev/null \
        "https://a.test:$FG/plain-$$" 2>&1; log_line a "/plain-$$")"

# ---------------------------------------------------------------- 4. HAProxy (send-proxy-v2) -> frontgate -> nginx
uri="/via-haproxy-$RANDOM"
body="$(curl -sS --max-time 10 --cacert "$CA" --interface 127.0.0.7 \
    --resolve "ha.test:$HA:127.0.0.1" "https://ha.test:$HA$uri" 2>&1)"
expect_eq "HAProxy -> frontgate -> nginx: request from 127.0.0.7 served" \
    "backend-ha uri=$uri host=ha.test" "$body"
expect_eq "HAProxy -> frontgate -> nginx: nginx logs 127.0.0.7, the address HAProxy saw" \
    "127.0.0.7 127.0.0.7 $uri" "$(log_line ha "$uri")"
expect_match "HAProxy -> frontgate: frontgate logs client=127.0.0.7 from peer 127.0.0.1" \
    'client=127\.0\.0\.7:[0-9]+ peer=127\.0\.0\.1:[0-9]+ sni="ha\.test"' \
    "$(grep 'sni="ha.test"' "$FG2_LOG" | tail -n1)"
# Trusted peers must send a header: a direct client from 127.0.0.1 is refused.
header_refusals() { grep -c 'refused: expected a PROXY protocol header' "$FG2_LOG"; }
before="$(header_refusals)"
out="$(curl -sS --max-time 10 --cacert "$CA" --resolve "ha.test:$FG2:127.0.0.1" "https://ha.test:$FG2/direct" 2>&1)"
rc=$?
wait_until 3 grows header_refusals "$before"
after="$(header_refusals)"
expect_eq "trusted peer without a PROXY header is refused (curl fails, frontgate logs it)" \
    "curl-failed logged=1 backend-untouched=0" \
    "$([ $rc -ne 0 ] && echo curl-failed || echo "curl-ok:$out") logged=$((after - before)) backend-untouched=$(grep -c ' /direct$' "$T/nginx/logs/ha.access.log")"

# ---------------------------------------------------------------- 5. hot reload (SIGHUP)
expect_eq "reload: before, r.test goes to r1" "cn=r1.test verify=0" \
    "$(subject 127.0.0.1 "$FG" -servername r.test)"

# Long-lived connection #1: openssl s_client, one request now, one after the reload.
mkfifo "$T/sclient.in"
timeout 60 openssl s_client -connect "127.0.0.1:$FG" -servername r.test -CAfile "$CA" -quiet \
    <"$T/sclient.in" >"$T/sclient.out" 2>"$T/sclient.err" &
SCLIENT_PID=$!
PIDS+=("$SCLIENT_PID")
exec 7>"$T/sclient.in"
printf 'GET /before-reload HTTP/1.1\r\nHost: r.test\r\n\r\n' >&7
wait_until 10 grep -q 'backend-r1 uri=/before-reload' "$T/sclient.out" ||
    fail "reload: long-lived s_client got its first answer" "$(cat "$T/sclient.out" "$T/sclient.err")"

# Long-lived connection #2: a 3 MiB download at 512 KiB/s (~6 s) spanning the reload.
curl -sS --max-time 30 --cacert "$CA" --resolve "r.test:$FG:127.0.0.1" --limit-rate 512K \
    -D "$T/slow.headers" -o "$T/slow.body" -w '%{http_code} %{size_download}' \
    "https://r.test:$FG/big" >"$T/slow.result" 2>"$T/slow.err" &
SLOW_PID=$!
PIDS+=("$SLOW_PID")
wait_until 10 test -s "$T/slow.body"

# The file poller may see the new file first; count only reloads that SIGHUP triggered.
reloads() { grep -c 'configuration reloaded.*trigger="SIGHUP"' "$FG_LOG"; }
before="$(reloads)"
fg_config "$P_R2" >"$T/fg/routes.yaml.new"
mv "$T/fg/routes.yaml.new" "$T/fg/routes.yaml"
kill -HUP "$FG_PID"
wait_until 5 grows reloads "$before"
expect_match "reload: SIGHUP applied the new file (log)" \
    'configuration reloaded .*trigger="SIGHUP"' "$(grep 'configuration reloaded.*SIGHUP' "$FG_LOG" | tail -n1)"
partial="$(stat -c %s "$T/slow.body")"
expect_eq "reload: after, a new connection to r.test gets r2's certificate" \
    "cn=r2.test verify=0" "$(subject 127.0.0.1 "$FG" -servername r.test)"
expect_eq "reload: after, curl r.test gets r2's body" "backend-r2 uri=/ host=r.test" "$(get r.test)"
expect_eq "reload: other routes unchanged (a.test)" "backend-a uri=/ host=a.test" "$(get a.test)"

printf 'GET /after-reload HTTP/1.1\r\nHost: r.test\r\n\r\n' >&7
if wait_until 10 grep -q 'uri=/after-reload' "$T/sclient.out"; then
    expect_eq "reload: connection opened before keeps its backend (2nd request on it -> r1)" \
        "backend-r1 uri=/after-reload host=r.test" "$(grep 'uri=/after-reload' "$T/sclient.out" | tr -d '\r')"
else
    fail "reload: connection opened before answers a 2nd request after the reload" \
        "no answer; s_client out: $(tr -d '\r' <"$T/sclient.out" | tail -n3) err: $(cat "$T/sclient.err")"
fi
exec 7>&-

wait "$SLOW_PID"
rc=$?
expect_eq "reload: 3 MiB download in flight during the reload completes from r1" \
    "rc=0 partial-at-reload<full=1 result=200 $BIG_SIZE sha=$BIG_SHA backend=r1" \
    "rc=$rc partial-at-reload<full=$([ "$partial" -lt "$BIG_SIZE" ] && echo 1 || echo "0($partial)") result=$(cat "$T/slow.result") sha=$(sha256sum "$T/slow.body" | cut -d' ' -f1) backend=$(sed -n 's/^X-Backend: *\([a-z0-9]*\).*/\1/ip' "$T/slow.headers")"

# A broken file on reload is refused; the running table keeps serving.
refusals() { grep -c 'configuration reload refused.*trigger="SIGHUP"' "$FG_LOG"; }
before="$(refusals)"
cp "$T/fg/broken.yaml" "$T/fg/routes.yaml.new"
mv "$T/fg/routes.yaml.new" "$T/fg/routes.yaml"
kill -HUP "$FG_PID"
wait_until 5 grows refusals "$before"
expect_match "reload: a broken file is refused with file:line:col in the log" \
    "configuration reload refused.*routes\.yaml:6:[0-9]+: routes\[0\]\.proxy_protocol" \
    "$(grep 'configuration reload refused.*SIGHUP' "$FG_LOG" | tail -n1)"
expect_eq "reload: after a refused reload r.test still goes to r2" \
    "backend-r2 uri=/ host=r.test" "$(get r.test)"
kill -0 "$FG_PID" 2>/dev/null
expect_eq "frontgate still running after all of the above" 0 $?

finish
