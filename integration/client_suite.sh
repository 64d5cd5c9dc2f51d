# shellcheck shell=bash
# The shell half shared by the real-client suites (telethon.sh, tdlib.sh): sourced, not run.
#
# A suite script sets SUITE (the name on its last line, `SUITE: N passed, M failed`), CLIENT
# (the client's name in check names) and optionally SAFEGUARDS (what keeps the client off the
# internet without a network namespace; "the DC overrides" if unset), sources this file and
# then either
#   - is called with `--inner T PY` (by itself, see suite_outer): calls suite_inner_init T PY and
#     suite_start_nginx, then for each variant starts its Python check (suite_check_start: the
#     fake DC and backend listen first), frontgate (suite_frontgate_config,
#     suite_start_frontgate, suite_wait_probe), lets the check go on (suite_check_go,
#     suite_check_wait), then suite_frontgate_checks for each frontgate and finish (lib.sh); or
#   - is called by the user: calls suite_outer with a function that installs its Python.
# Python check scripts print `ok   <what>` / `FAIL <what>: <why>` lines (integration/fake_dc.py's
# Checks); they are counted here with the shell's own checks (lib.sh's ok/fail/finish).
#
# Mimic modes (the route's `mimic:`, src/mtproto/gate.rs): `off` runs against fake_dc.py's
# silent backend; `live` and `learned` against fake_dc.py's backend relaying to nginx, a
# real TLS 1.3 server on loopback (suite_start_nginx), so frontgate has a flight to mirror
# and the suites still see every byte the backend got. SUITE_MIMIC_MODES lists the modes run
# (all three unless set, e.g. SUITE_MIMIC_MODES=live integration/tdlib.sh).
# shellcheck disable=SC2034  # used by the suites that source this file
SUITE_MIMIC_MODES="${SUITE_MIMIC_MODES:-off live learned}"

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
    # A second user, disabled: a valid secret the gateway must not serve.
    DISABLED_SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
}

# suite_start_nginx: nginx (Debian's /usr/sbin/nginx) on 127.0.0.1:$NGINX_PORT (set here)
# serving TLS 1.2 and 1.3 for $DOMAIN with a fresh self-signed P-256 certificate, everything
# in $T/nginx; the real site behind fake_dc.py's backend in mimic live/learned. Returns
# non-zero (after a FAIL line) when it does not start.
suite_start_nginx() {
    local d="$T/nginx" out
    port NGINX_PORT
    mkdir -p "$d/tmp"
    if ! out="$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" \
        -keyout "$d/key.pem" -out "$d/cert.pem" 2>&1)"; then
        fail "a self-signed P-256 certificate for nginx (openssl)" "$out"
        return 1
    fi
    cat >"$d/nginx.conf" <<EOF
$(nginx_main "$d/nginx.pid" "$d/error.log" info 64)
master_process off;
http {
    access_log off;
    $(nginx_temp_paths "$d/tmp")
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        server_name $DOMAIN;
        ssl_certificate $d/cert.pem;
        ssl_certificate_key $d/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        return 200 "the site behind $DOMAIN\n";
    }
}
EOF
    if ! out="$(nginx -t -p "$d" -e "$d/error.log" -c "$d/nginx.conf" 2>&1)"; then
        fail "nginx accepts its config" "$out"
        return 1
    fi
    nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
    PIDS+=("$!")
    if wait_port "$NGINX_PORT" 10; then
        ok "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') serves TLS 1.2/1.3 for $DOMAIN on 127.0.0.1:$NGINX_PORT (the real site for mimic live/learned)"
    else
        fail "nginx listens on 127.0.0.1:$NGINX_PORT" "$(tail -n 5 "$d/error.log" "$d/stdout.log" 2>&1)"
        return 1
    fi
}

# suite_frontgate_config PORT FAST_MODE MIMIC [ALLOW_PLAIN]: user `u` with $SECRET (and `off`
# with $DISABLED_SECRET, disabled), an
# `mtproto: true` route for $DOMAIN with `mimic: MIMIC` to 127.0.0.1:$BACKEND_PORT (the
# backend of check.py), every DC id to the fake DC on
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
    off: { secret: $DISABLED_SECRET, enabled: false }
  fast_mode: $2
EOF
    [ -n "${4:-}" ] && echo "  allow_plain: $4"
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
    mimic: $3
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

# suite_check_start LABEL OUT ERR COMMAND...: starts the Python check in the background with
# `--ready-file F --go-file G` appended, stdout to OUT and stderr to ERR, and waits (10 s at
# most) until its fake DC and backend listen; frontgate is started after that, so its
# start-up probe reaches the backend. suite_check_go lets it go on, suite_check_wait counts
# its lines. Sets CHECK_PID; returns non-zero (after a FAIL line) if the check never got ready.
suite_check_start() {
    local label="$1" out="$2" err="$3"
    shift 3
    CHECK_OUT=$out CHECK_ERR=$err CHECK_READY="$out.ready" CHECK_GO="$out.go" CHECK_FAILED_BEFORE=$FAILED
    "$@" --ready-file "$CHECK_READY" --go-file "$CHECK_GO" >"$out" 2>"$err" &
    CHECK_PID=$!
    PIDS+=("$CHECK_PID")
    if ! wait_until 10 test -e "$CHECK_READY"; then
        fail "[$label] check.py's fake DC and backend listen" "$(tail -n 5 "$err")"
        return 1
    fi
}

# suite_check_go: frontgate is up, the check may start its clients.
suite_check_go() { : >"$CHECK_GO"; }

# suite_check_wait LABEL: waits for the check started by suite_check_start, then echoes its
# stdout counting its ok/FAIL lines; an exit status != 0 without a FAIL line is a failure of
# its own.
suite_check_wait() {
    local label="$1" rc line
    wait "$CHECK_PID"
    rc=$?
    while IFS= read -r line; do
        case "$line" in
        "ok   "*) PASSED=$((PASSED + 1)); echo "$line" ;;
        "FAIL "*) FAILED=$((FAILED + 1)); echo "$line" ;;
        *) echo "$line" ;;
        esac
    done <"$CHECK_OUT"
    if [ "$rc" -ne 0 ] && [ "$FAILED" -eq "$CHECK_FAILED_BEFORE" ]; then
        fail "[$label] check.py exited with status $rc" "$(tail -n 5 "$CHECK_ERR")"
    fi
}

# suite_wait_probe LABEL LOG MIMIC: with mimic live/learned, waits (10 s at most) for
# frontgate's start-up probe to report in LOG that the backend (nginx behind check.py's
# backend) can be mirrored, so the probe's connection is over before any client comes; with
# off there is no probe and nothing to wait for.
suite_wait_probe() {
    local label="$1" log="$2" mimic="$3" line
    [ "$mimic" = off ] && return 0
    if wait_until 10 grep -q 'fake flights can mirror it\|fake flights cannot mirror' "$log" &&
        line="$(grep 'fake flights can mirror it' "$log")"; then
        ok "[$label] the start-up probe logs that the backend can be mirrored ($(printf '%s' "$line" | sed 's/.*the backend answers/the backend answers/' | cut -c1-160))"
    else
        fail "[$label] the start-up probe logs that the backend can be mirrored" \
            "$(grep -i 'probe\|mirror' "$log" | tail -n 3)"
    fi
}

# suite_frontgate_checks LABEL PID LOG [MIMIC]: frontgate (PID, logging to LOG) survived the
# client, its log line for user u names the fake DC, and the secret is nowhere in LOG. With
# MIMIC (a frontgate that served fake-TLS clients): LOG says the fake flights are shaped by
# that mode (`fixed: mimic: off` for off) and has no FIXED-shape warning; with off, no
# start-up probe line either.
suite_frontgate_checks() {
    local label="$1" pid="$2" log="$3" mimic="${4:-}" line shaped
    if kill -0 "$pid" 2>/dev/null; then
        ok "[$label] frontgate still running after the $CLIENT sessions"
    else
        fail "[$label] frontgate still running after the $CLIENT sessions" "$(tail -n 5 "$log")"
    fi
    # SESSION_BACKEND: where sessions go when not to the fake DC (the middle proxy's address).
    local want="${SESSION_BACKEND:-127.0.0.1:$DC_PORT}"
    line="$(grep 'connection closed' "$log" | grep -E 'user="?u"? ' | tail -n1)"
    if printf '%s' "$line" | grep -q "backend=$want "; then
        ok "[$label] the session's log line names the user and the DC it reached (backend=$want)"
    else
        fail "[$label] the session's log line names the user and the DC it reached" "${line:-no line with user=u}"
    fi
    if grep -qi "$SECRET" "$log"; then
        fail "[$label] the secret appears nowhere in frontgate's log" "$(grep -ci "$SECRET" "$log") lines contain it"
    else
        ok "[$label] the secret appears nowhere in frontgate's log"
    fi
    [ -n "$mimic" ] || return 0
    shaped="MTProto fake flights are shaped $mimic"
    [ "$mimic" = off ] && shaped="MTProto fake flights are shaped fixed: mimic: off"
    if line="$(grep -F "$shaped" "$log" | head -n1)" && [ -n "$line" ]; then
        ok "[$label] frontgate logs \`${line#*"MTProto fake flights are shaped "}\` (mimic: $mimic)"
    else
        fail "[$label] frontgate logs \`$shaped\`" "$(grep 'MTProto fake flights' "$log" | tail -n 3)"
    fi
    if line="$(grep 'MTProto fake flights use the FIXED shape' "$log" | head -n1)" && [ -n "$line" ]; then
        fail "[$label] no FIXED-shape warning in frontgate's log" "$line"
    else
        ok "[$label] no FIXED-shape warning in frontgate's log"
    fi
    if [ "$mimic" = off ]; then
        if line="$(grep 'fake flights can mirror it\|fake flights cannot mirror' "$log" | head -n1)" && [ -n "$line" ]; then
            fail "[$label] no start-up probe with mimic: off" "$line"
        else
            ok "[$label] no start-up probe with mimic: off"
        fi
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
