#!/usr/bin/env bash
# The shipped fail2ban filter matches frontgate's real "mtproto auth failed" lines (from
# probes with a wrong digest) and nothing else: not the "network policy refused" line of a
# connection a route's deny list refuses. Needs fail2ban-regex and openssl.
# dir and port are set by lib.sh's make_temp and port (printf -v):
# shellcheck disable=SC2154
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
SUITE=fail2ban
# shellcheck source=integration/lib.sh
. "$HERE/lib.sh"
FRONTGATE=${FRONTGATE:-target/release/frontgate}
FILTER="$HERE/../deploy/fail2ban/filter.d/frontgate.conf"
make_temp dir frontgate-fail2ban
cleanup_on_exit
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }

port port
cat > "$dir/routes.yaml" <<YAML
listen: 127.0.0.1:$port
mtproto: { users: { alice: 0123456789abcdef0123456789abcdef } }
routes:
  - sni: proxy.example.test
    mtproto: true
    to: 127.0.0.1:9
  - sni: other.example.test
    to: 127.0.0.1:9
    deny: [127.0.0.1]
YAML
"$FRONTGATE" run --config "$dir/routes.yaml" 2> "$dir/log" &
PIDS+=("$!")
wait_until 5 grep -q listening "$dir/log"
for name in proxy.example.test proxy.example.test other.example.test; do
    timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername "$name" </dev/null >/dev/null 2>&1
done
sleep 0.3
out=$(fail2ban-regex "$dir/log" "$FILTER" 2>&1)
check "the filter matches both failed MTProto checks" 'grep -qE "^Failregex: 2 total" <<<"$out"'
check "the matched address is the client's" 'grep -q "mtproto auth failed from 127.0.0.1 " "$dir/log"'
check "a non-mtproto route logs no auth failure" '[ "$(grep -c "auth failed" "$dir/log")" -eq 2 ]'
check "the denied connection logs its refusal, unmatched" 'grep -q "network policy refused 127.0.0.1 .*rule=\"deny\" scope=\"other.example.test\"" "$dir/log"'
finish
