#!/usr/bin/env bash
# Telethon through frontgate's fake-TLS MTProto proxy, against a fake Telegram DC.
#
#   integration/telethon.sh              # uses target/release/frontgate (built if missing)
#   FRONTGATE=/path/to/frontgate integration/telethon.sh
#   KEEP=1 integration/telethon.sh       # keep the temp dir (config, logs)
#   TELETHON_PYTHON=/venv/bin/python ... # a Python that already has the packages (no pip)
#   NO_NETNS=1 ...                       # do not use a private network namespace
#
# Installs telethon, TelethonFakeTLS and cryptography from PyPI into a venv in the temp dir,
# then runs integration/telethon/check.py (fake DC + the route's backend + the Telethon
# client, see its docstring) against frontgate in normal mode and with mtproto.fast_mode.
# Every DC id is mapped to the fake DC; when
# `unshare -n` works (root on Linux) the test runs in a fresh network namespace with only
# loopback, so nothing can leave the machine whatever the DC table says.
# Each check prints `ok   <what>` or `FAIL <what>: <details>`; the last line is
# `telethon: N passed, M failed`; the exit status is non-zero if M > 0.

set -u
set -o pipefail
export PATH="$PATH:/usr/sbin:/sbin"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SUITE=telethon
# shellcheck source=integration/lib.sh
. "$HERE/lib.sh"

# ------------------------------------------------------------------ inner part (loopback only)
if [ "${1:-}" = "--inner" ]; then
    T="$2"
    PY="$3"
    if [ -n "${IN_NETNS:-}" ]; then
        ip link set lo up || { fail "loopback up in the network namespace"; finish; }
    fi
    cleanup_on_exit # T belongs to the outer part: only the processes are ours

    port FG_PORT
    port FGF_PORT
    port DC_PORT
    port BACKEND_PORT
    SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    DOMAIN="telethon.frontgate.test"

    fg_config() { # fg_config PORT FAST_MODE
        cat <<EOF
listen:
  - 127.0.0.1:$1
mtproto:
  users:
    u: $SECRET
  fast_mode: $2
  datacenters:   # every DC id to the fake DC: nothing may go to Telegram
    1: [127.0.0.1:$DC_PORT]
    2: [127.0.0.1:$DC_PORT]
    3: [127.0.0.1:$DC_PORT]
    4: [127.0.0.1:$DC_PORT]
    5: [127.0.0.1:$DC_PORT]
routes:
  - sni: $DOMAIN
    mtproto: true
    to: 127.0.0.1:$BACKEND_PORT
EOF
    }

    # The same checks against frontgate in normal mode and with mtproto.fast_mode.
    for variant in normal fast_mode; do
        if [ "$variant" = normal ]; then port=$FG_PORT fast=false; else port=$FGF_PORT fast=true; fi
        fg_config "$port" "$fast" >"$T/frontgate-$variant.yaml"
        if out="$("$FRONTGATE" check --config "$T/frontgate-$variant.yaml" 2>&1)"; then
            ok "[$variant] frontgate check accepts the MTProto config"
        else
            fail "[$variant] frontgate check accepts the MTProto config" "$out"
            continue
        fi
        "$FRONTGATE" run --config "$T/frontgate-$variant.yaml" >"$T/frontgate-$variant.log" 2>&1 &
        fg_pid=$!
        PIDS+=("$fg_pid")
        if ! wait_port "$port" 10; then
            fail "[$variant] frontgate listens on 127.0.0.1:$port" "$(tail -n 5 "$T/frontgate-$variant.log")"
            continue
        fi

        failed_before=$FAILED
        "$PY" "$HERE/telethon/check.py" --label "$variant" --proxy-port "$port" --dc-port "$DC_PORT" \
            --backend-port "$BACKEND_PORT" --secret "$SECRET" --domain "$DOMAIN" \
            >"$T/check-$variant.out" 2>"$T/check-$variant.err" &
        check_pid=$!
        PIDS+=("$check_pid")
        wait "$check_pid"
        rc=$?
        while IFS= read -r line; do
            case "$line" in
            "ok   "*) PASSED=$((PASSED + 1)); echo "$line" ;;
            "FAIL "*) FAILED=$((FAILED + 1)); echo "$line" ;;
            *) echo "$line" ;;
            esac
        done <"$T/check-$variant.out"
        if [ "$rc" -ne 0 ] && [ "$FAILED" -eq "$failed_before" ]; then
            fail "[$variant] check.py exited with status $rc" "$(tail -n 5 "$T/check-$variant.err")"
        fi
        if kill -0 "$fg_pid" 2>/dev/null; then
            ok "[$variant] frontgate still running after the Telethon sessions"
        else
            fail "[$variant] frontgate still running after the Telethon sessions" "$(tail -n 5 "$T/frontgate-$variant.log")"
        fi
        line="$(grep 'connection closed' "$T/frontgate-$variant.log" | grep -E 'user="?u"? ' | tail -n1)"
        if printf '%s' "$line" | grep -q "backend=127.0.0.1:$DC_PORT "; then
            ok "[$variant] the session's log line names the user and the DC it reached (backend=127.0.0.1:$DC_PORT)"
        else
            fail "[$variant] the session's log line names the user and the DC it reached" "${line:-no line with user=u}"
        fi
        if grep -qi "$SECRET" "$T/frontgate-$variant.log"; then
            fail "[$variant] the secret appears nowhere in frontgate's log" "$(grep -ci "$SECRET" "$T/frontgate-$variant.log") lines contain it"
        else
            ok "[$variant] the secret appears nowhere in frontgate's log"
        fi
        if [ "$FAILED" -gt "$failed_before" ]; then
            echo "# frontgate log (tail):"
            tail -n 20 "$T/frontgate-$variant.log" | sed 's/^/#   /'
            echo "# check.py stderr (tail):"
            tail -n 20 "$T/check-$variant.err" | sed 's/^/#   /'
        fi
    done
    finish
fi

# ------------------------------------------------------------------ outer part (setup)
FRONTGATE="${FRONTGATE:-$ROOT/target/release/frontgate}"
if [ ! -x "$FRONTGATE" ]; then
    echo "building $FRONTGATE ..." >&2
    (cd "$ROOT" && cargo build --release --quiet) || { echo "telethon: 0 passed, 1 failed (build failed)"; exit 2; }
fi
FRONTGATE="$(cd "$(dirname "$FRONTGATE")" && pwd)/$(basename "$FRONTGATE")"
export FRONTGATE

make_temp T frontgate-telethon
STOP_GRACE=10 # the inner part needs time to stop its own processes on SIGTERM
cleanup_on_exit

PY="${TELETHON_PYTHON:-}"
if [ -z "$PY" ]; then
    echo "# installing telethon, telethonfaketls, cryptography into $T/venv" >&2
    if ! python3 -m venv "$T/venv" >"$T/pip.log" 2>&1 ||
        ! "$T/venv/bin/pip" install --quiet --disable-pip-version-check \
            telethon telethonfaketls cryptography >>"$T/pip.log" 2>&1; then
        fail "install telethon + telethonfaketls" "$(tail -n 3 "$T/pip.log")"
        finish
    fi
    PY="$T/venv/bin/python"
fi
echo "# $("$PY" -c 'import telethon, cryptography; print("telethon", telethon.__version__, "cryptography", cryptography.__version__)' 2>&1), $("$FRONTGATE" --version)"

if [ -z "${NO_NETNS:-}" ] && command -v unshare >/dev/null && command -v ip >/dev/null && unshare -n true 2>/dev/null; then
    echo "# running in a private network namespace (loopback only)"
    IN_NETNS=1 unshare -n bash "$0" --inner "$T" "$PY" &
else
    echo "# no private network namespace (NO_NETNS set, or unshare -n / ip unavailable): relying on the DC overrides"
    bash "$0" --inner "$T" "$PY" &
fi
INNER_PID=$!
PIDS+=("$INNER_PID")
wait "$INNER_PID"
rc=$?
PIDS=()
exit "$rc"
