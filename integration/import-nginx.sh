#!/usr/bin/env bash
# `frontgate import-nginx` against real nginx: for each configuration in tests/data/nginx
# (the seed stream.conf and the guide-style ones), renumbered onto loopback test ports, nginx
# runs it and frontgate runs its import; the same TLS ClientHellos (Python's ssl, one per name
# of the fixture's map, plus an unknown name, no SNI, and bytes that are not TLS) go through
# both, and recording backends say who got each: the same backend, the same PROXY header or
# none, the client's bytes intact; for the pools, again with their first servers refusing
# (both fall back the same way, `backup` last). Then the migration guide's rollback: frontgate takes
# nginx's port, and nginx restarted on the saved original configuration serves again. Last,
# the guide's final route file (MTProto users moved onto the built-in core) passes check and
# keeps the users' links, and unparsable nginx input fails with file:line.
#
#   integration/import-nginx.sh                   # uses target/release/frontgate
#   FRONTGATE=/path/to/frontgate integration/import-nginx.sh
#   KEEP=1 integration/import-nginx.sh            # keep the temp dir (configs, imports, logs)
#
# Needs: nginx with the stream and ssl_preread modules (Debian nginx-full), python3.
# Loopback only; every process started here is stopped on exit.

set -u
set -o pipefail
export PATH="$PATH:/usr/sbin:/sbin"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=import-nginx
# shellcheck source=integration/lib.sh
. "$ROOT/integration/lib.sh"
FRONTGATE="${FRONTGATE:-$ROOT/target/release/frontgate}"
RIG="$ROOT/integration/nginx_import_rig.py"
DATA="$ROOT/tests/data/nginx"

for tool in nginx python3; do
    command -v "$tool" >/dev/null || { echo "$SUITE: $tool is not installed" >&2; exit 2; }
done
if [ ! -x "$FRONTGATE" ]; then
    echo "building $FRONTGATE ..."
    (cd "$ROOT" && cargo build --release --quiet) || { echo "$SUITE: build failed" >&2; exit 2; }
fi
FRONTGATE="$(cd "$(dirname "$FRONTGATE")" && pwd)/$(basename "$FRONTGATE")"

# Debian builds the stream module as a dynamic module: the test configs load it themselves.
STREAM_MODULE=""
NGINX_V="$(nginx -V 2>&1)"
if [[ "$NGINX_V" == *"--with-stream=dynamic"* ]]; then
    modules="$(sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p' <<<"$NGINX_V")"
    STREAM_MODULE="${modules:-/usr/lib/nginx/modules}/ngx_stream_module.so"
    [ -r "$STREAM_MODULE" ] || { echo "$SUITE: $STREAM_MODULE is missing (apt-get install nginx-full)" >&2; exit 2; }
elif [[ "$NGINX_V" != *"--with-stream"* ]]; then
    echo "$SUITE: this nginx has no stream module (Debian: nginx-full)" >&2
    exit 2
fi
IPV6=0
if grep -qE '^0{31}1 .* lo$' /proc/net/if_inet6 2>/dev/null; then IPV6=1; fi

make_temp T frontgate-import-nginx
chmod 755 "$T"
cleanup_on_exit
echo "frontgate $("$FRONTGATE" --version 2>/dev/null) | $(nginx -v 2>&1) | temp $T"

# stop PID: SIGTERM, then reap (the PIDS entry stays; cleanup skips what is gone).
stop() {
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

# start_nginx DIR CONF: nginx in the foreground of a background job; NGINX_PID.
start_nginx() {
    nginx -p "$1/" -e "$1/logs/error.log" -c "$2" 2>>"$1/logs/stderr.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}

# start_frontgate DIR ROUTES PORT: frontgate on 127.0.0.1:PORT; FG_PID.
start_frontgate() {
    "$FRONTGATE" run --config "$2" --listen "127.0.0.1:$3" >>"$1/frontgate.log" 2>&1 &
    FG_PID=$!
    PIDS+=("$FG_PID")
}

# compare NAME DESC DIR NGINX-PORT FRONTGATE-PORT [--only LABEL]: one check per probe.
compare() {
    local name=$1 desc=$2 dir=$3 nginx_port=$4 fg_port=$5 verdict what details
    shift 5
    while IFS=$'\t' read -r verdict what details; do
        if [ "$verdict" = ok ]; then ok "$what"; else fail "$what" "$details"; fi
    done < <(python3 "$RIG" compare "$desc" "$dir/rec" --nginx "$nginx_port" --frontgate "$fg_port" --name "$name" "$@" 2>&1 ||
        printf 'fail\t%s: the probe rig\texited non-zero\n' "$name")
}

# run_fixture NAME FIXTURE [rollback|failover]: the whole comparison for one configuration,
# then the guide's rollback, or the pools with their first servers refusing.
run_fixture() {
    local name=$1 fixture=$2 d="$T/$1" ports="" free i desc front fg regex rc
    mkdir -p "$d/rec"
    for i in $(seq 1 24); do port free; ports="$ports$free,"; done
    if ! python3 "$RIG" prepare "$fixture" "$d" --ports "$ports" --ipv6 "$IPV6" \
        --stream-module "$STREAM_MODULE" 2>"$d/prepare.err"; then
        fail "$name: renumbering onto test ports" "$(cat "$d/prepare.err")"
        return
    fi
    desc="$d/desc.json"
    front="$(python3 "$RIG" get "$desc" front_port)"
    local run_conf import_conf
    run_conf="$(python3 "$RIG" get "$desc" run_conf)"
    import_conf="$(python3 "$RIG" get "$desc" import_conf)"

    if nginx -t -q -p "$d/" -e "$d/logs/error.log" -c "$run_conf" 2>"$d/nginx-t.err"; then
        ok "$name: nginx accepts the configuration (nginx -t)"
    else
        fail "$name: nginx accepts the configuration (nginx -t)" "$(cat "$d/nginx-t.err")"
        return
    fi

    "$FRONTGATE" import-nginx "$import_conf" --out "$d/routes.yaml" 2>"$d/import.err"
    rc=$?
    if [ "$rc" = 0 ] && grep -q "passes \`frontgate check\`" "$d/import.err"; then
        ok "$name: import-nginx exits 0 and its routes pass check"
    else
        fail "$name: import-nginx exits 0 and its routes pass check" "rc=$rc $(cat "$d/import.err")"
        return
    fi
    if "$FRONTGATE" check --config "$d/routes.yaml" >"$d/check.out" 2>&1; then
        ok "$name: frontgate check accepts the written file"
    else
        fail "$name: frontgate check accepts the written file" "$(cat "$d/check.out")"
    fi
    regex="$(python3 "$RIG" get "$desc" regex_keys)"
    if [ -n "$regex" ]; then
        if grep -q '^# not mapped: .*regular expression' "$d/routes.yaml"; then
            ok "$name: the regex map entry is reported as not mapped, not guessed"
        else
            fail "$name: the regex map entry is reported as not mapped, not guessed"
        fi
    fi

    python3 "$RIG" record "$desc" "$d/rec" >"$d/rec/log" 2>&1 &
    PIDS+=("$!")
    local rec_pid=$!
    start_nginx "$d" "$run_conf"
    port fg
    start_frontgate "$d" "$d/routes.yaml" "$fg"
    if ! wait_until 10 test -e "$d/rec/ready" || ! wait_port "$front" 10 || ! wait_port "$fg" 10; then
        fail "$name: nginx, frontgate and the backends listen" \
            "$(tail -n 5 "$d/logs/error.log" "$d/frontgate.log" "$d/rec/log" 2>&1)"
        stop "$FG_PID"; stop "$NGINX_PID"; stop "$rec_pid"
        return
    fi
    compare "$name" "$desc" "$d" "$front" "$fg"

    case "${3:-}" in
    rollback) rollback "$name" "$d" "$desc" "$run_conf" "$front" "$fg" ;;
    failover)
        # The pools' first servers refuse: nginx falls back (weight order, then `backup`),
        # and so must the imported `to:` lists.
        stop "$rec_pid"
        local dead
        dead="$(python3 "$RIG" get "$desc" port:8101),$(python3 "$RIG" get "$desc" port:8102),$(python3 "$RIG" get "$desc" port:8201)"
        rm -f "$d/rec/ready"
        python3 "$RIG" record "$desc" "$d/rec" --dead "$dead" >>"$d/rec/log" 2>&1 &
        PIDS+=("$!")
        rec_pid=$!
        if wait_until 10 test -e "$d/rec/ready"; then
            compare "$name (primaries refuse)" "$desc" "$d" "$front" "$fg" --only "example.net,vpn.example.net"
        else
            fail "$name: the backends restart without the primaries" "$(tail -n 5 "$d/rec/log")"
        fi
        ;;
    esac
    stop "$FG_PID"
    stop "$NGINX_PID"
    stop "$rec_pid"
}

# The guide's cut-over and rollback (deploy/MIGRATING-FROM-NGINX.md): save nginx's config,
# take its stream block out, stop it, let frontgate take its port; then roll back: stop
# frontgate, put the saved config back, start nginx: it serves again as before.
rollback() {
    local name=$1 d=$2 desc=$3 run_conf=$4 front=$5 fg=$6 second
    local probe="proxy.example.com"
    cp -a "$run_conf" "$run_conf.before-frontgate"
    python3 - "$run_conf" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
start = text.index("stream {")
depth, i = 0, start
while True:
    if text[i] == "{":
        depth += 1
    elif text[i] == "}":
        depth -= 1
        if depth == 0:
            break
    i += 1
open(path, "w").write(text[:start] + "# stream block moved to frontgate\n" + text[i + 1:])
EOF
    stop "$NGINX_PID"
    if nginx -t -q -p "$d/" -e "$d/logs/error.log" -c "$run_conf" 2>/dev/null; then
        ok "$name: cut-over: nginx's config without the stream block is still valid"
    else
        fail "$name: cut-over: nginx's config without the stream block is still valid"
    fi
    start_frontgate "$d" "$d/routes.yaml" "$front"
    second=$FG_PID
    if wait_port "$front" 10; then
        compare "$name (cut-over: frontgate on nginx's port)" "$desc" "$d" "$fg" "$front" --only "$probe"
    else
        fail "$name: cut-over: frontgate listens on nginx's port" "$(tail -n 5 "$d/frontgate.log")"
    fi
    stop "$second"
    cp -a "$run_conf.before-frontgate" "$run_conf"
    start_nginx "$d" "$run_conf"
    if wait_port "$front" 10; then
        compare "$name (rollback: nginx on its saved config)" "$desc" "$d" "$front" "$fg" --only "$probe"
    else
        fail "$name: rollback: nginx listens again" "$(tail -n 5 "$d/logs/error.log")"
    fi
}

run_fixture seed "$DATA/stream.conf" rollback
run_fixture remnawave "$DATA/remnawave-node.conf"
run_fixture 3x-ui "$DATA/3x-ui-reality.conf"
run_fixture site-xray "$DATA/site-xray.conf"
run_fixture pools "$DATA/pools/nginx.conf" failover

# The migration guide's final route file (MTProto users on the built-in core): it passes
# check, and `link` prints the ee-secret the old proxy's link had: ee + secret + hex(domain).
GUIDE="$ROOT/deploy/MIGRATING-FROM-NGINX.md"
python3 - "$GUIDE" >"$T/guide.yaml" <<'PY'
import sys
lines = open(sys.argv[1]).read().split("\n")
at = next(i for i, l in enumerate(lines) if "integration/import-nginx.sh checks the next block" in l)
start = next(i for i in range(at, len(lines)) if lines[i].strip() == "```yaml")
end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
indent = len(lines[start]) - len(lines[start].lstrip())
print("\n".join(l[indent:] for l in lines[start + 1 : end]))
PY
if "$FRONTGATE" check --config "$T/guide.yaml" >"$T/guide-check.out" 2>&1; then
    ok "migration guide: its route file with the MTProto users passes check"
else
    fail "migration guide: its route file with the MTProto users passes check" "$(cat "$T/guide-check.out")"
fi
OLD_LINK_SECRET="$(python3 -c 'print("ee" + "3a1f6c9d0b7e24a85c1f03d9b6e7a4c2" + b"proxy.example.com".hex())')"
"$FRONTGATE" link --config "$T/guide.yaml" --host 203.0.113.7 >"$T/guide-link.out" 2>&1
if grep -q "tg://proxy?server=203.0.113.7&port=443&secret=$OLD_LINK_SECRET\b" "$T/guide-link.out" &&
    grep -q "$OLD_LINK_SECRET" "$GUIDE"; then
    ok "migration guide: the moved user's link keeps the old proxy's ee-secret"
else
    fail "migration guide: the moved user's link keeps the old proxy's ee-secret" \
        "want $OLD_LINK_SECRET; link printed: $(cat "$T/guide-link.out")"
fi

# Unparsable input: a clear message with file:line, a non-zero exit, nothing written.
printf 'stream {\n    server {\n        listen 443\n    }\n}\n' >"$T/broken.conf"
"$FRONTGATE" import-nginx "$T/broken.conf" --out "$T/broken.yaml" >"$T/broken.out" 2>&1
rc=$?
if [ "$rc" != 0 ] && grep -q "^frontgate: $T/broken.conf:4: unexpected \"}\"" "$T/broken.out" && [ ! -e "$T/broken.yaml" ]; then
    ok "unparsable nginx config: exit $rc, file:line in the message, nothing written"
else
    fail "unparsable nginx config: exit non-zero, file:line in the message, nothing written" "rc=$rc $(cat "$T/broken.out")"
fi

# A stream block that routes by something other than the server name: nothing translates,
# so the import says so and fails instead of writing a file that closes every connection.
# shellcheck disable=SC2016 # nginx variables, not shell ones
printf 'stream {\n    map $ssl_preread_protocol $up {\n        "" 127.0.0.1:22;\n        default 127.0.0.1:8443;\n    }\n    server { listen 443; ssl_preread on; proxy_pass $up; }\n}\n' >"$T/protocol.conf"
"$FRONTGATE" import-nginx "$T/protocol.conf" >"$T/protocol.yaml" 2>"$T/protocol.err"
rc=$?
# shellcheck disable=SC2016 # nginx variables, not shell ones
if [ "$rc" != 0 ] && grep -q "no route could be translated" "$T/protocol.err" &&
    grep -q '^# not mapped: .*protocol.conf:2: `map $ssl_preread_protocol' "$T/protocol.yaml"; then
    ok "a stream block routing by protocol: exit $rc, the map reported as not mapped"
else
    fail "a stream block routing by protocol: exit non-zero, the map reported as not mapped" "rc=$rc $(cat "$T/protocol.err")"
fi

finish
