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

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SUITE=telethon
CLIENT=Telethon
# shellcheck source=integration/client_suite.sh
. "$HERE/client_suite.sh"

# ------------------------------------------------------------------ inner part (loopback only)
if [ "${1:-}" = "--inner" ]; then
    suite_inner_init "$2" "$3"
    port FG_PORT
    port FGF_PORT
    DOMAIN="telethon.frontgate.test"

    # The same checks against frontgate in normal mode and with mtproto.fast_mode.
    for variant in normal fast_mode; do
        if [ "$variant" = normal ]; then port=$FG_PORT fast=false; else port=$FGF_PORT fast=true; fi
        suite_frontgate_config "$port" "$fast" >"$T/frontgate-$variant.yaml"
        suite_start_frontgate "$variant" "$T/frontgate-$variant.yaml" "$port" || continue
        fg_pid=$FG_PID

        failed_before=$FAILED
        suite_run_check "$variant" "$T/check-$variant.out" "$T/check-$variant.err" \
            "$PY" "$HERE/telethon/check.py" --label "$variant" --proxy-port "$port" --dc-port "$DC_PORT" \
            --backend-port "$BACKEND_PORT" --secret "$SECRET" --domain "$DOMAIN"
        suite_frontgate_checks "$variant" "$fg_pid" "$T/frontgate-$variant.log"
        if [ "$FAILED" -gt "$failed_before" ]; then
            suite_tail "frontgate log" "$T/frontgate-$variant.log"
            suite_tail "check.py stderr" "$T/check-$variant.err"
        fi
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
