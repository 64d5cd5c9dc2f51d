#!/usr/bin/env bash
# Fidelity: does frontgate's fake server flight look like the route's real backend answering
# the same ClientHello? (PROTOCOL.md §8.) Writes FIDELITY.md at the repository root.
#
#   integration/fidelity.sh                                   # /work-style defaults below
#   FRONTGATE=/path/to/frontgate TRIES=20 DOWNLOAD_MIB=16 integration/fidelity.sh
#   OUT=/tmp/F.md KEEP=1 integration/fidelity.sh               # elsewhere; keep the temp dir
#
# Starts on loopback: Debian's nginx (one server with `ssl_protocols TLSv1.2 TLSv1.3;`, one
# with its default protocols, i.e. TLS 1.2 only, one plain-HTTP server for the next),
# pyOpenSSL (fidelity/tls_server.py, the OpenSSL 4.x of PyPI's cryptography wheel), a
# frontgate terminating TLS itself (rustls) in front of the plain nginx, and a fake DC
# (fidelity/measure.py dc). Then, for each backend and each mimic mode the binary knows
# (`live`, `learned`, `off` when `frontgate check` accepts `mimic: live`; otherwise the
# binary's one fixed shape), a frontgate with two `mtproto: true` routes (proxy.test,
# storage.googleapis.com) whose `to` is that backend, and fidelity/measure.py run with the
# client hellos: TDLib 1.8.66's recorded hello, TelethonFakeTLS's codec's hello (made now),
# mtg's vectors; each re-signed for the user at the current time. fidelity/report.py turns
# the results into FIDELITY.md and the checks below.
#
# Checks: every frontgate passes `check`, listens, and is still alive (no panic) after its
# run; every fake flight verifies as a client checks it; a replay through frontgate gets the
# backend's answer; the downloads complete; with `mimic: live`, JA3S, key share and flight
# bytes equal the backend's for every TLS 1.3 backend and hello, with `mimic: learned` the
# flight bytes are within 5%. The fixed shape (an old binary, `mimic: off`) is only reported.
# Prints `fidelity: N passed, M failed`. Not part of CI.
#
# Knobs: FRONTGATE (default target/release/frontgate, built if missing), TRIES (timing tries per hello
# and side, default 10), DOWNLOAD_MIB (default 16), QUIET_MS (quiet window that ends a
# captured flight, default 200), FIDELITY_PYTHON (a Python with pyOpenSSL, cryptography and
# telethonfaketls; default: a venv made once in target/fidelity-venv), OUT (default
# FIDELITY.md at the root), KEEP.

set -u
set -o pipefail
export PATH="$PATH:/usr/sbin:/sbin"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SUITE=fidelity
# shellcheck source=integration/lib.sh
. "$HERE/lib.sh"
STARTED_MS=$(now_ms)

TRIES="${TRIES:-10}"
DOWNLOAD_MIB="${DOWNLOAD_MIB:-16}"
DOWNLOAD_BYTES=$((DOWNLOAD_MIB * 1024 * 1024))
QUIET_MS="${QUIET_MS:-200}"
OUT="${OUT:-$ROOT/FIDELITY.md}"
FRONTGATE="${FRONTGATE:-$ROOT/target/release/frontgate}"
if [ ! -x "$FRONTGATE" ]; then
    echo "building $FRONTGATE ..." >&2
    (cd "$ROOT" && cargo build --release --quiet) || { echo "fidelity: build failed" >&2; exit 2; }
fi
for tool in nginx openssl; do
    command -v "$tool" >/dev/null || { echo "fidelity: needs $tool (Debian: nginx-full, openssl)" >&2; exit 2; }
done

# ---------------------------------------------------------------- Python
PY="${FIDELITY_PYTHON:-}"
if [ -z "$PY" ]; then
    VENV="$ROOT/target/fidelity-venv"
    if ! "$VENV/bin/python" -c 'import OpenSSL, cryptography, TelethonFakeTLS' 2>/dev/null; then
        echo "# installing pyOpenSSL, cryptography, telethon, telethonfaketls into $VENV" >&2
        mkdir -p "$ROOT/target"
        if ! python3 -m venv "$VENV" >"$ROOT/target/fidelity-pip.log" 2>&1 ||
            ! "$VENV/bin/pip" install --quiet --disable-pip-version-check pyOpenSSL cryptography \
                telethon telethonfaketls >>"$ROOT/target/fidelity-pip.log" 2>&1; then
            echo "fidelity: pip install failed: $(tail -n 3 "$ROOT/target/fidelity-pip.log")" >&2
            exit 2
        fi
    fi
    PY="$VENV/bin/python"
fi
"$PY" -c 'import OpenSSL, cryptography, TelethonFakeTLS' 2>/dev/null ||
    { echo "fidelity: $PY lacks pyOpenSSL, cryptography or TelethonFakeTLS" >&2; exit 2; }

make_temp T frontgate-fidelity
# nginx workers may run as another user (when started as root): they must read the doc root.
chmod 755 "$T"
cleanup_on_exit
mkdir -p "$T/results" "$T/www" "$T/nginx/logs"
chmod 755 "$T/www" "$T/nginx"

# stop_one PID: SIGTERM, up to 5 s, then SIGKILL; reaped and dropped from PIDS.
stop_one() {
    local pid=$1 i keep=()
    kill "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    for i in "${PIDS[@]}"; do [ "$i" != "$pid" ] && keep+=("$i"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- certificate, secret, hellos
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=proxy.test -addext "subjectAltName=DNS:proxy.test,DNS:storage.googleapis.com" \
    -keyout "$T/key.pem" -out "$T/cert.pem" >"$T/openssl.log" 2>&1 ||
    { fail "P-256 test certificate" "$(tail -n 3 "$T/openssl.log")"; finish; }
chmod 644 "$T/key.pem" "$T/cert.pem"
head -c "$DOWNLOAD_BYTES" /dev/zero | tr '\0' x >"$T/www/blob"
# The site's front page, which frontgate downloads to learn its record sizes: large enough
# for full records (a megabyte is read of it).
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' y >"$T/www/index.html"
chmod 644 "$T/www/blob" "$T/www/index.html"
SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

HELLOS=(--hello "tdlib-1.8.66=$ROOT/tests/data/tdlib/client-hello-tdlib-1.8.66.json")
if "$PY" "$HERE/fidelity/measure.py" telethon-hello --secret "$SECRET" --domain proxy.test \
    --out "$T/client-hello-telethonfaketls.json" 2>"$T/telethon-hello.err"; then
    HELLOS+=(--hello "telethonfaketls=$T/client-hello-telethonfaketls.json")
else
    fail "TelethonFakeTLS builds a ClientHello" "$(tail -n 3 "$T/telethon-hello.err")"
fi
for f in "$ROOT"/tests/data/mtg/faketls/client-hello-ok-*.json; do
    n="$(basename "$f" .json)"
    HELLOS+=(--hello "mtg-${n#client-hello-}=$f")
done

# ---------------------------------------------------------------- backends
port P_TLS13; port P_TLS4K; port P_TLS12; port P_HTTP; port P_PYOSSL; port P_RUSTLS; port P_DC
cat >"$T/nginx/nginx.conf" <<EOF
$(nginx_main "$T/nginx/nginx.pid" "$T/nginx/logs/error.log" warn 1024)
http {
    default_type application/octet-stream;
    access_log off;
    $(nginx_temp_paths "$T/nginx")
    server {   # TLS 1.3 enabled: what the route's backend should be
        listen 127.0.0.1:$P_TLS13 ssl;
        ssl_certificate $T/cert.pem;
        ssl_certificate_key $T/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $T/www;
    }
    server {   # TLS 1.3 with 4 KiB records, as latency-tuned sites set it
        listen 127.0.0.1:$P_TLS4K ssl;
        ssl_certificate $T/cert.pem;
        ssl_certificate_key $T/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_buffer_size 4k;
        root $T/www;
    }
    server {   # nginx 1.22's default ssl_protocols: no TLSv1.3
        listen 127.0.0.1:$P_TLS12 ssl;
        ssl_certificate $T/cert.pem;
        ssl_certificate_key $T/key.pem;
        root $T/www;
    }
    server {   # plain HTTP, behind frontgate's own TLS termination
        listen 127.0.0.1:$P_HTTP;
        root $T/www;
    }
}
EOF
if ! nginx -t -q -p "$T/nginx/" -e "$T/nginx/logs/error.log" -c "$T/nginx/nginx.conf" 2>"$T/nginx/t.err"; then
    fail "nginx accepts its config" "$(cat "$T/nginx/t.err")"
    finish
fi
nginx -p "$T/nginx/" -e "$T/nginx/logs/error.log" -c "$T/nginx/nginx.conf" 2>"$T/nginx/stderr.log" &
PIDS+=("$!")
"$PY" "$HERE/fidelity/tls_server.py" --listen "127.0.0.1:$P_PYOSSL" --cert "$T/cert.pem" \
    --key "$T/key.pem" --body-bytes "$DOWNLOAD_BYTES" 2>"$T/tls_server.log" &
PIDS+=("$!")
"$PY" "$HERE/fidelity/measure.py" dc --listen "127.0.0.1:$P_DC" --bytes "$DOWNLOAD_BYTES" 2>"$T/dc.log" &
PIDS+=("$!")
cat >"$T/rustls.yaml" <<EOF
listen: [127.0.0.1:$P_RUSTLS]
routes:
  - sni: [proxy.test, storage.googleapis.com]
    tls: { cert: $T/cert.pem, key: $T/key.pem, alpn: [http/1.1] }
    to: 127.0.0.1:$P_HTTP
EOF
RUSTLS_OK=1
if out="$("$FRONTGATE" check --config "$T/rustls.yaml" 2>&1)"; then
    "$FRONTGATE" run --config "$T/rustls.yaml" >"$T/rustls.log" 2>&1 &
    RUSTLS_PID=$!
    PIDS+=("$RUSTLS_PID")
else
    fail "frontgate check accepts the TLS-terminating backend's config" "$out"
    RUSTLS_OK=0
fi
for p in "$P_TLS13" "$P_TLS4K" "$P_TLS12" "$P_HTTP" "$P_PYOSSL" "$P_DC"; do
    wait_port "$p" 10 || { fail "backend on 127.0.0.1:$p listens" "$(tail -n 3 "$T/nginx/logs/error.log" "$T/nginx/stderr.log" "$T/tls_server.log" "$T/dc.log")"; finish; }
done
if [ "$RUSTLS_OK" = 1 ] && ! wait_port "$P_RUSTLS" 10; then
    fail "frontgate (TLS termination) listens" "$(tail -n 3 "$T/rustls.log")"
    RUSTLS_OK=0
fi
ok "backends listen: nginx TLS 1.3 :$P_TLS13, nginx TLS 1.3 4k records :$P_TLS4K, nginx default :$P_TLS12, pyOpenSSL :$P_PYOSSL$([ "$RUSTLS_OK" = 1 ] && echo ", rustls :$P_RUSTLS"), fake DC :$P_DC"

# name port download-path
BACKENDS=("nginx-tls13 $P_TLS13 /blob" "nginx-4k $P_TLS4K /blob" "pyopenssl $P_PYOSSL /" "nginx-default $P_TLS12 /blob")
[ "$RUSTLS_OK" = 1 ] && BACKENDS=("${BACKENDS[@]:0:3}" "rustls $P_RUSTLS /blob" "${BACKENDS[3]}")

# ---------------------------------------------------------------- mimic support
fg_config() { # fg_config PORT BACKEND-PORT MODE (MODE "" = no mimic key)
    cat <<EOF
listen: [127.0.0.1:$1]
timeouts: { client_hello: 5s, idle: 30s }
mtproto:
  users: { fid: $SECRET }
  datacenters: { 1: [127.0.0.1:$P_DC], 2: [127.0.0.1:$P_DC], 3: [127.0.0.1:$P_DC], 4: [127.0.0.1:$P_DC], 5: [127.0.0.1:$P_DC] }
routes:
EOF
    local sni
    for sni in proxy.test storage.googleapis.com; do
        echo "  - sni: $sni"
        echo "    mtproto: true"
        [ -n "$3" ] && echo "    mimic: $3"
        echo "    to: 127.0.0.1:$2"
    done
}
port FG
fg_config "$FG" "$P_TLS13" live >"$T/probe-mimic.yaml"
if "$FRONTGATE" check --config "$T/probe-mimic.yaml" >"$T/probe-mimic.out" 2>&1; then
    MODES=(live learned off)
    echo "# $FRONTGATE accepts mimic: live: measuring modes ${MODES[*]}"
else
    MODES=(fixed)
    echo "# $FRONTGATE refuses mimic: live ($(head -n 1 "$T/probe-mimic.out")): its fixed shape only"
fi

# ---------------------------------------------------------------- the runs
for b in "${BACKENDS[@]}"; do
    read -r bname bport bpath <<<"$b"
    first_mode=1
    for mode in "${MODES[@]}"; do
        label="$bname/$mode"
        cfg="$T/fg-$bname-$mode.yaml"
        log="${cfg%.yaml}.log"
        port FG
        fg_config "$FG" "$bport" "$([ "$mode" = fixed ] || echo "$mode")" >"$cfg"
        if ! out="$("$FRONTGATE" check --config "$cfg" 2>&1)"; then
            fail "[$label] frontgate check accepts the config" "$out"
            continue
        fi
        printf '%s\n' "$out" >"${cfg%.yaml}.check"
        ok "[$label] frontgate check accepts the config"
        FRONTGATE_LOG=info "$FRONTGATE" run --config "$cfg" >"$log" 2>&1 &
        fg_pid=$!
        PIDS+=("$fg_pid")
        if ! wait_port "$FG" 10; then
            fail "[$label] frontgate listens" "$(tail -n 5 "$log")"
            stop_one "$fg_pid"
            continue
        fi
        extra=()
        [ "$first_mode" = 1 ] && extra=(--backend-download "$bpath")
        first_mode=0
        if ! timeout 600 "$PY" "$HERE/fidelity/measure.py" run --label "$label" \
            --frontgate "127.0.0.1:$FG" --backend "127.0.0.1:$bport" --secret "$SECRET" \
            "${HELLOS[@]}" --tries "$TRIES" --download-bytes "$DOWNLOAD_BYTES" \
            --quiet-ms "$QUIET_MS" "${extra[@]}" --out "$T/results/$bname-$mode.json" \
            2>"$T/results/$bname-$mode.err"; then
            fail "[$label] measure.py ran" "$(tail -n 5 "$T/results/$bname-$mode.err")"
        fi
        if alive "$fg_pid"; then
            ok "[$label] frontgate still running after the run"
        else
            fail "[$label] frontgate still running after the run" "$(tail -n 5 "$log")"
        fi
        stop_one "$fg_pid"
        if grep -q panicked "$log"; then
            fail "[$label] no panic in frontgate's log" "$(grep -m1 panicked "$log")"
        else
            ok "[$label] no panic in frontgate's log"
        fi
        # What frontgate said about this backend (warnings, serving-mode lines), for the report.
        # What frontgate said about this backend (warnings, mimic lines) and how its
        # connections ended, for the report.
        {
            grep -iE 'TLS 1\.|warn|fingerprint' "${cfg%.yaml}.check" | sed 's/^/frontgate check: /'
            sed -E 's/\x1b\[[0-9;]*m//g; s/^[0-9-]+T[0-9:.]+Z +//' "$log" | grep -vE 'connection closed|mtproto auth failed' |
                grep -E 'WARN|ERROR|mimic|flight|profile|learn|serving|TLS 1' | sed -E 's/client=[^ ]+ ?//' |
                sort | uniq -c | sort -rn | head -n 8
            grep -o 'outcome=[a-z_]*' "$log" | sort | uniq -c | sort -rn |
                awk '{ printf "%s%s %s", (NR > 1 ? ", " : "connection outcomes: "), $1, substr($2, 9) } END { if (NR) print "" }'
        } >"$T/results/$bname-$mode.said"
    done
done
if [ "$RUSTLS_OK" = 1 ]; then
    if alive "$RUSTLS_PID"; then
        ok "frontgate (TLS termination backend) still running"
    else
        fail "frontgate (TLS termination backend) still running" "$(tail -n 5 "$T/rustls.log")"
    fi
fi

# ---------------------------------------------------------------- the report
ELAPSED_S=$((($(now_ms) - STARTED_MS) / 1000))
report_out="$T/report.out"
if "$PY" "$HERE/fidelity/report.py" --results "$T/results" --out "$OUT" \
    --frontgate "$FRONTGATE$([ -r "$FRONTGATE.commit" ] && echo " (commit $(cat "$FRONTGATE.commit"))")" --modes "${MODES[*]}" --tries "$TRIES" --download-bytes "$DOWNLOAD_BYTES" \
    --elapsed "$ELAPSED_S" --nginx "$(nginx -v 2>&1 | sed 's|.*nginx/||')" \
    --system-openssl "$(openssl version | cut -d' ' -f1-2)" >"$report_out" 2>"$T/report.err"; then
    while IFS= read -r line; do
        case "$line" in
        "ok   "*) ok "${line#ok   }" ;;
        "FAIL "*) line="${line#FAIL }"; fail "${line%%: *}" "${line#*: }" ;;
        *) echo "$line" ;;
        esac
    done <"$report_out"
    echo "# wrote $OUT (${ELAPSED_S}s)"
else
    fail "report.py wrote $OUT" "$(tail -n 5 "$T/report.err")"
fi
finish
