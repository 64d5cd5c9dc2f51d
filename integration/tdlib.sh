#!/usr/bin/env bash
# TDLib (Telegram's own client library) through frontgate's MTProto proxy, against a fake DC.
#
#   integration/tdlib.sh                 # uses target/release/frontgate (built if missing)
#   FRONTGATE=/path/to/frontgate integration/tdlib.sh
#   KEEP=1 integration/tdlib.sh          # keep the temp dir (configs, logs)
#   TDLIB_VERBOSITY=4 KEEP=1 ...         # TDLib's own log into the temp dir (tdlib-*.log)
#   TDLIB_PYTHON=/venv/bin/python ...    # a Python that already has cryptography and Xray-core
#   LIBTDJSON=/path/libtdjson.so ...     # a libtdjson.so at hand (no wheel download)
#   NO_NETNS=1 ...                       # do not use a private network namespace
#
# Downloads the python-telegram 2.0.0 wheel from PyPI (pip download --no-deps) and takes its
# libtdjson.so (TDLib 1.8.66), installs cryptography into a venv in the temp dir, then runs
# integration/tdlib/check.py (fake DC + the route's backend from integration/fake_dc.py, TDLib
# driven through ctypes, see its docstring) against frontgate in every mimic mode of the
# route (off: a silent fake backend; live, learned: the backend relays to nginx, a real
# TLS 1.3 site on loopback, see client_suite.sh), each in normal mode and with
# mtproto.fast_mode: each time a frontgate with the defaults (ee-secret, wrong secret) and one
# with `mtproto.allow_plain: true` (dd-secret); then once more (mimic off) with every DC
# connection through `mtproto.via`, a microsocks on loopback (split mode), once through
# the README's split-mode recipe: Xray (the Xray-core wheel) with a SOCKS inbound and a
# VLESS + REALITY outbound to a second Xray on loopback (integration/xray_recipe.py), and
# once in middle-proxy mode (ad_tag) through the test kit's fake middle proxy. TDLib's check is
# its `pingProxy`, which
# answers only once its req_pq_multi got a resPQ back through the proxy.
# Every DC id is mapped to the fake DC and TDLib is told it has no network, so it dials only
# the proxy; when `unshare -n` works (root on Linux) the test runs in a fresh network
# namespace with only loopback, so nothing can leave the machine whatever TDLib or the DC
# table would do.
# Each check prints `ok   <what>` or `FAIL <what>: <details>`; the last line is
# `tdlib: N passed, M failed`; the exit status is non-zero if M > 0.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SUITE=tdlib
CLIENT=TDLib
SAFEGUARDS="the DC overrides and TDLib's networkTypeNone"
PYTHON_TELEGRAM=python-telegram==2.0.0
# Xray (Go) as a Python extension: the tunnel of the split-mode recipe variant.
XRAY_CORE=Xray-core==1.8.26.13
# shellcheck source=integration/client_suite.sh
. "$HERE/client_suite.sh"

# ------------------------------------------------------------------ inner part (loopback only)
if [ "${1:-}" = "--inner" ]; then
    suite_inner_init "$2" "$3"
    DOMAIN="tdlib.frontgate.test"
    suite_start_nginx || finish

    # run_variant VARIANT MIMIC FAST [VIA_LINE]: TDLib against a frontgate with the defaults
    # and one with allow_plain, each with MIMIC and fast_mode FAST (and VIA_LINE, in which awk
    # turns \n into line breaks, in its mtproto: block); the variant's files are named after
    # VARIANT.
    run_variant() {
        local variant="$1" mimic="$2" fast="$3" via_line="${4:-}" fg plain port="" plain_port=""
        local failed_before fg_pid="" plain_pid="" slug
        slug="$(printf '%s' "$variant" | tr -cs 'A-Za-z0-9' '_')"
        local tdlog="$T/tdlib-$slug.log"
        fg="$T/frontgate-$slug"
        plain="$fg-allow_plain"
        port port
        port plain_port
        with_via() { awk -v l="$via_line" '{ print } l != "" && /^  fast_mode:/ { print l }'; }
        suite_frontgate_config "$port" "$fast" "$mimic" | with_via >"$fg.yaml"
        suite_frontgate_config "$plain_port" "$fast" "$mimic" true | with_via >"$plain.yaml"
        failed_before=$FAILED
        # Every wait inside check.py is bounded; `timeout` also bounds a TDLib that hangs.
        suite_check_start "$variant" "$fg.check.out" "$fg.check.err" \
            timeout -k 5 240 "$PY" "$HERE/tdlib/check.py" --libtdjson "$LIBTDJSON" --label "$variant" \
            --proxy-port "$port" --plain-port "$plain_port" --dc-port "$DC_PORT" \
            --backend-port "$BACKEND_PORT" --secret "$SECRET" --disabled-secret "$DISABLED_SECRET" --domain "$DOMAIN" \
            --tdlib-verbosity "${TDLIB_VERBOSITY:-0}" --tdlib-log "$tdlog" \
            --mimic "$mimic" --upstream-port "$NGINX_PORT" --probes 2 || return 0
        if suite_start_frontgate "$variant" "$fg.yaml" "$port"; then
            fg_pid=$FG_PID
            suite_wait_probe "$variant" "$fg.log" "$mimic"
        fi
        if suite_start_frontgate "$variant, allow_plain" "$plain.yaml" "$plain_port"; then
            plain_pid=$FG_PID
            suite_wait_probe "$variant, allow_plain" "$plain.log" "$mimic"
        fi
        suite_check_go
        suite_check_wait "$variant"
        [ -n "$fg_pid" ] && suite_frontgate_checks "$variant" "$fg_pid" "$fg.log" "$mimic"
        [ -n "$plain_pid" ] && suite_frontgate_checks "$variant, allow_plain" "$plain_pid" "$plain.log"
        if [ "$FAILED" -gt "$failed_before" ]; then
            suite_tail "frontgate log" "$fg.log"
            suite_tail "frontgate log (allow_plain)" "$plain.log"
            suite_tail "check.py stderr" "$fg.check.err"
            [ -f "$tdlog" ] && suite_tail "TDLib log" "$tdlog"
        fi
        # The next variant's check binds the same backend port: this one's frontgates go.
        for pid in $fg_pid $plain_pid; do kill "$pid" 2>/dev/null; done
    }

    # The same checks in every mimic mode, in normal mode and with mtproto.fast_mode.
    for mimic in $SUITE_MIMIC_MODES; do
        for fast in false true; do
            variant="mimic $mimic"
            [ "$fast" = true ] && variant="$variant, fast_mode"
            run_variant "$variant" "$mimic" "$fast"
        done
    done

    # Split mode: every DC connection through a SOCKS5 upstream (microsocks on loopback).
    # via_fallback_direct is false, so TDLib's pings can reach the fake DC only through it.
    socks_port=""
    port socks_port
    microsocks -i 127.0.0.1 -p "$socks_port" >"$T/microsocks.log" 2>&1 &
    PIDS+=("$!")
    if wait_port "$socks_port"; then
        ok "[mimic off, via microsocks] microsocks listens on 127.0.0.1:$socks_port"
        run_variant "mimic off, via microsocks" off false "  via: [socks5://127.0.0.1:$socks_port]"
    else
        fail "[mimic off, via microsocks] microsocks listens on 127.0.0.1:$socks_port" \
            "$(tail -n 3 "$T/microsocks.log") (apt-get install microsocks)"
    fi

    # Split mode as README.md's recipe writes it: Xray's SOCKS inbound (password auth) with a
    # VLESS + REALITY outbound to a "foreign" Xray on loopback, whose freedom outbound sends
    # from 127.0.0.9 (xray_recipe.py). TDLib's pings reach the fake DC only through both.
    variant="mimic off, via Xray (the README's recipe)"
    xray_socks="" xray_vless=""
    port xray_socks
    port xray_vless
    if xray_auth="$("$PY" "$HERE/xray_recipe.py" --readme "$ROOT/README.md" --out "$T" \
        --socks-port "$xray_socks" --vless-port "$xray_vless" --dest "127.0.0.1:$NGINX_PORT" \
        --server-name "$DOMAIN" --send-through 127.0.0.9 2>"$T/xray-recipe.err")"; then
        "$PY" "$HERE/xray_recipe.py" --run "$T/xray-server.json" >"$T/xray-server.log" 2>&1 &
        PIDS+=("$!")
        "$PY" "$HERE/xray_recipe.py" --run "$T/xray-client.json" >"$T/xray-client.log" 2>&1 &
        PIDS+=("$!")
        if wait_port "$xray_vless" && wait_port "$xray_socks"; then
            ok "[$variant] both Xrays listen (VLESS + REALITY on $xray_vless, SOCKS on $xray_socks)"
            run_variant "$variant" off false "  via: [socks5://$xray_auth@127.0.0.1:$xray_socks]"
            # Each DC connection went out of the "foreign" Xray, not from frontgate.
            if grep -Eq "accepted tcp:127\.0\.0\.1:$DC_PORT( |\$)" "$T/xray-server-access.log" 2>/dev/null; then
                ok "[$variant] the foreign Xray carried the DC connections (its access log)"
            else
                fail "[$variant] the foreign Xray carried the DC connections (its access log)" \
                    "$(tail -n 3 "$T/xray-server-access.log" 2>&1)"
            fi
        else
            fail "[$variant] both Xrays listen" "$(tail -n 3 "$T/xray-server.log" "$T/xray-client.log")"
        fi
    else
        fail "[$variant] the README's Xray recipe made runnable" "$(tail -n 3 "$T/xray-recipe.err")"
    fi

    # Middle-proxy mode: mtproto.ad_tag set, the ME list and secret from the test kit's fake
    # middle proxy (integration/bench-mtproto-client middle), which checks every
    # RPC_PROXY_REQ and relays its message to the fake DC, as a real ME relays to Telegram.
    # fallback_direct is false, so TDLib's pings can reach the fake DC only through it.
    label="mimic off, middle proxy (ad_tag)"
    tag="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    "$FAKE_MIDDLE" middle --forward "127.0.0.1:$DC_PORT" >"$T/middle.out" 2>"$T/middle.err" &
    PIDS+=("$!")
    for _ in $(seq 100); do grep -q '^ready ' "$T/middle.out" && break; sleep 0.1; done
    cfg="$(sed -n 's/^ready config=\([^ ]*\).*/\1/p' "$T/middle.out")"
    if [ -n "$cfg" ]; then
        ok "[$label] the fake middle proxy and its config server listen"
        # The sessions' log lines name the middle proxy they reached.
        SESSION_BACKEND="$(sed -n 's/^ready .* me=\([^ ]*\).*/\1/p' "$T/middle.out")"
        run_variant "$label" off false "  ad_tag: $tag\n  middle_proxy:\n    secret_url: $cfg/getProxySecret\n    config_url: $cfg/getProxyConfig\n    config_v6_url: $cfg/getProxyConfigV6\n    fallback_direct: false"
        unset SESSION_BACKEND
        seen="$(grep '^req ' "$T/middle.out")"
        if [ -n "$seen" ] && ! grep -qv "ad_tag=$tag .*problems=\[\]" <<<"$seen"; then
            ok "[$label] $(wc -l <<<"$seen") sessions reached the fake ME with the ad_tag, both addresses and the flags right"
        else
            fail "[$label] every RPC_PROXY_REQ carries the ad_tag and passes the fake's checks" "${seen:-none seen}"
        fi
    else
        fail "[$label] the fake middle proxy starts" "$(tail -n 3 "$T/middle.err")"
    fi
    finish
fi

# ------------------------------------------------------------------ outer part (setup)
# shellcheck disable=SC2317  # called by suite_outer
install_tdlib() {
    PY="${TDLIB_PYTHON:-}"
    if [ -z "$PY" ]; then
        suite_venv "cryptography and Xray-core" cryptography "$XRAY_CORE" || return 1
    fi
    lib_from="${LIBTDJSON:-}"
    if [ -z "${LIBTDJSON:-}" ]; then
        lib_from="the $PYTHON_TELEGRAM wheel"
        echo "# downloading $PYTHON_TELEGRAM (TDLib's libtdjson.so) into $T/wheel" >&2
        LIBTDJSON="$T/tdlib/telegram/lib/libtdjson.so"
        if ! "$PY" -m pip download --quiet --disable-pip-version-check --no-deps "$PYTHON_TELEGRAM" \
            -d "$T/wheel" >>"$T/pip.log" 2>&1 ||
            ! "$PY" -c 'import glob, sys, zipfile
zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).extract("telegram/lib/libtdjson.so", sys.argv[2])' \
                "$T/wheel" "$T/tdlib" >>"$T/pip.log" 2>&1; then
            suite_setup_failed "download $PYTHON_TELEGRAM and take telegram/lib/libtdjson.so out of it"
            return 1
        fi
    fi
    export LIBTDJSON
    # The test kit's fake middle proxy, for the middle-proxy variant.
    CARGO_TARGET_DIR="${MIDDLE_TARGET_DIR:-/tmp/frontgate-middle-target}" cargo build --release --quiet \
        --manifest-path "$HERE/bench-mtproto-client/Cargo.toml" || { suite_setup_failed "build integration/bench-mtproto-client (the fake middle proxy)"; return 1; }
    export FAKE_MIDDLE="${MIDDLE_TARGET_DIR:-/tmp/frontgate-middle-target}/release/bench-mtproto-client"
    echo "# $("$PY" -c 'import cryptography, sys; print("python", sys.version.split()[0], "cryptography", cryptography.__version__)' 2>&1), libtdjson.so from $lib_from, $("$FRONTGATE" --version)"
}
suite_outer "$0" install_tdlib
