# shellcheck shell=bash
# The shell half shared by the real-client suites (telethon.sh, tdlib.sh): sourced, not run.
#
# A suite script sets SUITE (the name on its last line, `SUITE: N passed, M failed`), CLIENT
# (the client's name in check names) and optionally SAFEGUARDS (what keeps the client off the
# internet without a network namespace; "the DC overrides" if unset), sources this file and
# then either
#   - is called with `--inner T PY` (by itself, see suite_outer): calls suite_inner_init T PY, runs
#     frontgate (suite_frontgate_config, suite_start_frontgate) and its Python check
#     (suite_run_check), then suite_frontgate_checks for each frontgate and finish (lib.sh); or
#   - is called by the user: calls suite_outer with a function that installs its Python.
# Python check scripts print `ok   <what>` / `FAIL <what>: <why>` lines (integration/fake_dc.py's
# Checks); they are counted here with the shell's own checks (lib.sh's ok/fail/finish).

set -u
set -o pipefail
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ------------------------------------------------------------------ inner part (loopback only)

# suite_inner_init T PY: loopback up in a fresh network namespace, cleanup of the started
# processes (lib.sh). Sets T and PY (from the arguments), the fake DC's and the backend's
# ports DC_PORT and BACKEND_PORT, and SECRET, a fresh user secret.
suite_inner_init() {
    T="$1"
    PY="$2"
    if [ -n "${IN_NETNS:-}" ]; then
        ip link set lo up || { echo "FAIL loopback up in the network namespace"; echo "$SUITE: 0 passed, 1 failed"; exit 1; }
    fi
    cleanup_on_exit
    port DC_PORT
    port BACKEND_PORT
    SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
}

# suite_frontgate_config PORT FAST_MODE [ALLOW_PLAIN]: one user `u` with $SECRET, an
# `mtproto: true` route for $DOMAIN to 127.0.0.1:$BACKEND_PORT, every DC id to the fake DC on
# 127.0.0.1:$DC_PORT. The config refuses negative ids; media (negative) and test (+10000)
# indices map onto 1..5 and unknown ones fall back to DC 2 (src/mtproto/dc.rs), so these five
# entries cover every index a client can send.
suite_frontgate_config() {
    cat <<EOF
listen:
  - 127.0.0.1:$1
mtproto:
  users:
    u: $SECRET
  fast_mode: $2
EOF
    [ -n "${3:-}" ] && echo "  allow_plain: $3"
    cat <<EOF
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

# suite_start_frontgate LABEL CONFIG PORT: `frontgate check` then `frontgate run` of CONFIG
# (logging to CONFIG's name with .log), waits until it listens on PORT. Sets FG_PID; returns
# non-zero (after a FAIL line) when any step fails.
suite_start_frontgate() {
    local label="$1" config="$2" port="$3" out
    if out="$("$FRONTGATE" check --config "$config" 2>&1)"; then
        ok "[$label] frontgate check accepts the MTProto config"
    else
        fail "[$label] frontgate check accepts the MTProto config" "$out"
        return 1
    fi
    "$FRONTGATE" run --config "$config" >"${config%.yaml}.log" 2>&1 &
    FG_PID=$!
    PIDS+=("$FG_PID")
    if ! wait_port "$port" 10; then
        fail "[$label] frontgate listens on 127.0.0.1:$port" "$(tail -n 5 "${config%.yaml}.log")"
        return 1
    fi
}

# suite_run_check LABEL OUT ERR COMMAND...: runs the Python check, stdout to OUT and stderr to
# ERR, then echoes OUT counting its ok/FAIL lines; an exit status != 0 without a FAIL line is
# a failure of its own.
suite_run_check() {
    local label="$1" out="$2" err="$3" failed_before=$FAILED check_pid rc line
    shift 3
    "$@" >"$out" 2>"$err" &
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
    done <"$out"
    if [ "$rc" -ne 0 ] && [ "$FAILED" -eq "$failed_before" ]; then
        fail "[$label] check.py exited with status $rc" "$(tail -n 5 "$err")"
    fi
}

# suite_frontgate_checks LABEL PID LOG: frontgate (PID, logging to LOG) survived the client,
# its log line for user u names the fake DC, and the secret is nowhere in LOG.
suite_frontgate_checks() {
    local label="$1" pid="$2" log="$3" line
    if kill -0 "$pid" 2>/dev/null; then
        ok "[$label] frontgate still running after the $CLIENT sessions"
    else
        fail "[$label] frontgate still running after the $CLIENT sessions" "$(tail -n 5 "$log")"
    fi
    line="$(grep 'connection closed' "$log" | grep -E 'user="?u"? ' | tail -n1)"
    if printf '%s' "$line" | grep -q "backend=127.0.0.1:$DC_PORT "; then
        ok "[$label] the session's log line names the user and the DC it reached (backend=127.0.0.1:$DC_PORT)"
    else
        fail "[$label] the session's log line names the user and the DC it reached" "${line:-no line with user=u}"
    fi
    if grep -qi "$SECRET" "$log"; then
        fail "[$label] the secret appears nowhere in frontgate's log" "$(grep -ci "$SECRET" "$log") lines contain it"
    else
        ok "[$label] the secret appears nowhere in frontgate's log"
    fi
}

# suite_tail TITLE FILE: the last 20 lines of FILE, as comments under `# TITLE (tail):`.
suite_tail() {
    echo "# $1 (tail):"
    tail -n 20 "$2" 2>/dev/null | sed 's/^/#   /'
}

# ------------------------------------------------------------------ outer part (setup)

# suite_setup_failed WHAT: the FAIL line for a setup step (with the end of $T/pip.log) and
# the summary; returns 1.
suite_setup_failed() {
    echo "FAIL $1: $(tail -n 3 "$T/pip.log" | tr -s '\n' ' ' | cut -c1-400)"
    echo "$SUITE: 0 passed, 1 failed"
    return 1
}

# suite_venv WHAT PACKAGE...: a venv in $T/venv with the PACKAGEs from PyPI; sets PY to its
# Python, or fails with `FAIL install WHAT`.
suite_venv() {
    local what="$1" list
    shift
    list="$*"
    echo "# installing ${list// /, } into $T/venv" >&2
    if ! python3 -m venv "$T/venv" >"$T/pip.log" 2>&1 ||
        ! "$T/venv/bin/pip" install --quiet --disable-pip-version-check "$@" >>"$T/pip.log" 2>&1; then
        suite_setup_failed "install $what"
        return 1
    fi
    PY="$T/venv/bin/python"
}

# suite_outer SCRIPT INSTALL: finds or builds $FRONTGATE, makes the temp dir T, runs INSTALL
# (which sets PY to the Python to use, or prints a FAIL line and the summary and fails), runs
# `SCRIPT --inner T PY` in a private network namespace with only loopback when `unshare -n`
# works (root on Linux), otherwise as it is. Exits with the inner part's status.
suite_outer() {
    local script="$1" install="$2" rc
    FRONTGATE="${FRONTGATE:-$ROOT/target/release/frontgate}"
    if [ ! -x "$FRONTGATE" ]; then
        echo "building $FRONTGATE ..." >&2
        (cd "$ROOT" && cargo build --release --quiet) || { echo "$SUITE: 0 passed, 1 failed (build failed)"; exit 2; }
    fi
    FRONTGATE="$(cd "$(dirname "$FRONTGATE")" && pwd)/$(basename "$FRONTGATE")"
    export FRONTGATE

    make_temp T "frontgate-$SUITE"
    # The inner part gets time to stop its own processes before it is killed.
    STOP_GRACE=10
    cleanup_on_exit

    "$install" || exit 1

    if [ -z "${NO_NETNS:-}" ] && command -v unshare >/dev/null && command -v ip >/dev/null && unshare -n true 2>/dev/null; then
        echo "# running in a private network namespace (loopback only)"
        IN_NETNS=1 unshare -n bash "$script" --inner "$T" "$PY" &
    else
        echo "# no private network namespace (NO_NETNS set, or unshare -n / ip unavailable): relying on ${SAFEGUARDS:-the DC overrides}"
        bash "$script" --inner "$T" "$PY" &
    fi
    PIDS+=("$!")
    wait "$!"
    rc=$?
    exit "$rc"
}
