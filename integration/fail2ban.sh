#!/usr/bin/env bash
# The shipped fail2ban filter matches frontgate's real "mtproto auth failed" lines (from
# probes with a wrong digest) and nothing else. Needs fail2ban-regex and openssl.
set -u
FRONTGATE=${FRONTGATE:-target/release/frontgate}
FILTER="$(cd "$(dirname "$0")/.." && pwd)/deploy/fail2ban/filter.d/frontgate.conf"
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
passed=0 failed=0
check() { if eval "$2"; then echo "ok   $1"; passed=$((passed+1)); else echo "FAIL $1"; failed=$((failed+1)); fi; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/routes.yaml" <<YAML
listen: 127.0.0.1:$port
mtproto: { users: { alice: 0123456789abcdef0123456789abcdef } }
routes:
  - sni: proxy.example.test
    mtproto: true
    to: 127.0.0.1:9
  - sni: other.example.test
    to: 127.0.0.1:9
YAML
"$FRONTGATE" run --config "$dir/routes.yaml" 2> "$dir/log" &
pid=$!
for _ in $(seq 50); do grep -q listening "$dir/log" && break; sleep 0.1; done
for name in proxy.example.test proxy.example.test other.example.test; do
    timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername "$name" </dev/null >/dev/null 2>&1
done
sleep 0.3
out=$(fail2ban-regex "$dir/log" "$FILTER" 2>&1)
check "the filter matches both failed MTProto checks" 'grep -qE "^Failregex: 2 total" <<<"$out"'
check "the matched address is the client's" 'grep -q "mtproto auth failed from 127.0.0.1 " "$dir/log"'
check "a non-mtproto route logs no auth failure" '[ "$(grep -c "auth failed" "$dir/log")" -eq 2 ]'
echo "fail2ban: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
