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
# client, see its docstring) against frontgate in every mimic mode of the route (off: a
# silent fake backend; live, learned: the backend relays to nginx, a real TLS 1.3 site on
# loopback, see client_suite.sh), each in normal mode and with mtproto.fast_mode.
# Every DC id is mapped to the fake DC; when
# `unshare -n` works (root on Linux) the test runs in a fresh network namespace with only
# loopback, so nothing can leave the machine whatever the DC table says.
# Each check prints `ok   <what>` or `FAIL <what>: <details>`; the last line is
# `telethon: N passed, M failed`; the exit status is non-zero if M > 0.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SUITE=telethon
CLIENT=Telethon
# shellcheck source=integration/client_suite.sh
. "$HERE/client_suite.sh"

# ------------------------------------------------------------------ inner part (loopback only)
if [ "${1:-}" = "--inner" ]; then
    suite_inner_init "$2" "$3"
    DOMAIN="telethon.frontgate.test"
    suite_start_nginx || finish

    # The same checks in every mimic mode, in normal mode and with mtproto.fast_mode.
    for mimic in $SUITE_MIMIC_MODES; do
        for fast in false true; do
            variant="mimic $mimic"
            [ "$fast" = true ] && variant="$variant, fast_mode"
            name="$T/frontgate-$mimic-fast_$fast"
            port port
            suite_frontgate_config "$port" "$fast" "$mimic" >"$name.yaml"
            failed_before=$FAILED
            suite_check_start "$variant" "$name.check.out" "$name.check.err" \
                timeout -k 5 120 "$PY" "$HERE/telethon/check.py" --label "$variant" --proxy-port "$port" \
                --dc-port "$DC_PORT" --backend-port "$BACKEND_PORT" --secret "$SECRET" --domain "$DOMAIN" \
                --mimic "$mimic" --upstream-port "$NGINX_PORT" --probes 1 || continue
            if suite_start_frontgate "$variant" "$name.yaml" "$port"; then
                fg_pid=$FG_PID
                suite_wait_probe "$variant" "$name.log" "$mimic"
            fi
            suite_check_go
            suite_check_wait "$variant"
            [ -n "${fg_pid:-}" ] && suite_frontgate_checks "$variant" "$fg_pid" "$name.log" "$mimic"
            if [ "$FAILED" -gt "$failed_before" ]; then
                suite_tail "frontgate log" "$name.log"
                suite_tail "check.py stderr" "$name.check.err"
            fi
            [ -n "${fg_pid:-}" ] && kill "$fg_pid" 2>/dev/null
            fg_pid=""
        done
    done
    finish
fi

# ------------------------------------------------------------------ outer part (setup)
# shellcheck disable=SC2317  # called by suite_outer
install_python() {
    PY="${TELETHON_PYTHON:-}"
    if [ -z "$PY" ]; then
        suite_venv "telethon + telethonfaketls" telethon telethonfaketls cryptography || return 1
    fi
    echo "# $("$PY" -c 'import telethon, cryptography; print("telethon", telethon.__version__, "cryptography", cryptography.__version__)' 2>&1), $("$FRONTGATE" --version)"
}
suite_outer "$0" install_python
