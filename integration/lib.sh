# shellcheck shell=bash
# Helpers shared by the integration suites and benchmarks (run.sh, acme-pebble.sh,
# fail2ban.sh, telethon.sh, bench-relay, bench-mtproto). Source it, do not run it:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It sets no shell options and starts nothing; it only defines the variables PIDS, SUITE,
# KEPT_PREFIX, STOP_GRACE, PASSED, FAILED, PORT_LO, PORT_HI and the functions below.
# Linux only (/proc), bash >= 4.4.
#
# Processes and the temp dir
#   PIDS+=("$!")            register a background process; cleanup stops it.
#   make_temp VAR NAME      VAR := a new directory /tmp/NAME.XXXXXX, removed by cleanup
#                           (kept, with "${KEPT_PREFIX}kept DIR" on stderr, when KEEP is set).
#   alive PID               PID is running (a zombie counts as gone).
#   kill_started [GRACE]    SIGTERM to every PIDS entry, up to GRACE s (default 2) for them
#                           to exit, SIGKILL to what is left, then reap them all.
#   cleanup                 kill_started $STOP_GRACE (default 2), then remove (or keep) the
#                           make_temp directory.
#   cleanup_on_exit         trap cleanup on EXIT and turn INT/TERM into `exit 130` (so the
#                           EXIT trap runs).
#
# Checks and the summary (the suites' output format)
#   ok WHAT                 PASSED+1; prints `ok   WHAT`.
#   fail WHAT [DETAILS]     FAILED+1; prints `FAIL WHAT: DETAILS`, or `FAIL WHAT` with no
#                           DETAILS; newlines become spaces and the free text is cut at 400
#                           characters.
#   finish                  prints `$SUITE: N passed, M failed` and exits 1 if M > 0, else 0.
#
# Ports (loopback only)
#   port_busy PORT [udp]    something uses PORT: a TCP connect to 127.0.0.1 or [::1]
#                           succeeds, or any TCP socket (any address, any state) has it as
#                           its local port in /proc/net/tcp{,6}; with `udp`, also any UDP
#                           socket in /proc/net/udp{,6}.
#   port VAR [udp]          VAR := a random port that is not port_busy (TCP, plus UDP with
#                           `udp`) and not handed out before in this shell, picked from
#                           PORT_LO..PORT_HI: below the start of the kernel's ephemeral range
#                           (/proc/sys/net/ipv4/ip_local_port_range), in 20000..31999 when the
#                           range starts at 32000 or above, so no outgoing connection can be
#                           given a port we picked before our server binds it. Exits 2 if
#                           none is found.
#   listening PORT [ADDR]   a TCP connect to ADDR (default 127.0.0.1):PORT succeeds.
#   wait_until SECONDS CMD...  run CMD (output discarded) every 0.1 s until it succeeds
#                           (0) or SECONDS (may be fractional) have passed (1).
#   wait_port PORT [SECONDS] [ADDR]  wait_until SECONDS (default 10) listening PORT ADDR.
#
# nginx
#   nginx_temp_paths DIR    the five *_temp_path directives (one line) with every temporary
#                           file under DIR, so an unprivileged nginx never writes outside it.
#   nginx_main PID_FILE ERROR_LOG LEVEL CONNECTIONS
#                           the main context of a test nginx: in the foreground, one worker,
#                           its pid and error log where given, CONNECTIONS per worker.
#
# Numbers (benchmarks)
#   median                  the median of the numbers on stdin (one a line); `n/a` if none.
#   fmt X [DECIMALS]        X with DECIMALS (default 0) decimals; `n/a` for empty or n/a.
#   ratio A B               A / B with 2 decimals; `n/a` if either is missing or B is 0.
#   busy_pct                whole-machine CPU busy percent over one second (/proc/stat).
#   now_ms                  wall clock in milliseconds.

PIDS=()
SUITE="${SUITE:-integration}"
KEPT_PREFIX="${KEPT_PREFIX:-}"
STOP_GRACE="${STOP_GRACE:-2}"
PASSED=0
FAILED=0
LIB_TEMP_DIR=""
LIB_PORTS_GIVEN=" "

# ---------------------------------------------------------------- time
now_ms() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local t=${EPOCHREALTIME/[.,]/}
        echo $((10#$t / 1000))
    else
        date +%s%3N
    fi
}
lib_secs_to_ms() { # 1.5 -> 1500
    local s=$1 i f=""
    i=${s%%.*}
    [[ $s == *.* ]] && f=${s#*.}
    f="${f}000"
    echo $((10#${i:-0} * 1000 + 10#${f:0:3}))
}

# ---------------------------------------------------------------- processes and the temp dir
alive() {
    local s
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}
kill_started() {
    local grace_ms pid deadline left
    [ "${#PIDS[@]}" -gt 0 ] || return 0
    grace_ms=$(lib_secs_to_ms "${1:-2}")
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    deadline=$(($(now_ms) + grace_ms))
    while :; do
        left=0
        for pid in "${PIDS[@]}"; do alive "$pid" && { left=1; break; }; done
        [ "$left" = 0 ] && break
        [ "$(now_ms)" -ge "$deadline" ] && break
        sleep 0.05
    done
    for pid in "${PIDS[@]}"; do alive "$pid" && kill -9 "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    return 0
}
make_temp() {
    local d
    d="$(mktemp -d "/tmp/$2.XXXXXX")" || { echo "${KEPT_PREFIX}cannot create a temp dir in /tmp" >&2; exit 2; }
    LIB_TEMP_DIR=$d
    printf -v "$1" '%s' "$d"
}
cleanup() {
    kill_started "$STOP_GRACE"
    if [ -n "$LIB_TEMP_DIR" ]; then
        if [ -n "${KEEP:-}" ]; then echo "${KEPT_PREFIX}kept $LIB_TEMP_DIR" >&2; else rm -rf "$LIB_TEMP_DIR"; fi
    fi
    return 0
}
cleanup_on_exit() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# ---------------------------------------------------------------- checks and the summary
lib_one_line() { printf '%s' "$1" | tr -s '\n' ' ' | cut -c1-400; }
ok() {
    PASSED=$((PASSED + 1))
    printf 'ok   %s\n' "$1"
}
fail() {
    FAILED=$((FAILED + 1))
    if [ $# -ge 2 ]; then
        printf 'FAIL %s: %s\n' "$1" "$(lib_one_line "$2")"
    else
        printf 'FAIL %s\n' "$(lib_one_line "$1")"
    fi
}
finish() {
    printf '%s: %d passed, %d failed\n' "$SUITE" "$PASSED" "$FAILED"
    exit $((FAILED > 0 ? 1 : 0))
}

# ---------------------------------------------------------------- ports (loopback only)
lib_port_in_proc() { # lib_port_in_proc PORT FILE...: some socket in these tables has local port PORT
    local hex f files=()
    hex=$(printf ':%04X' "$1")
    shift
    for f in "$@"; do [ -r "$f" ] && files+=("$f"); done # no tcp6/udp6 without IPv6
    [ "${#files[@]}" -gt 0 ] || return 1
    awk -v h="$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1; exit } END { exit !found }' \
        "${files[@]}" 2>/dev/null
}
listening() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }
port_busy() {
    listening "$1" 127.0.0.1 && return 0
    listening "$1" ::1 && return 0
    lib_port_in_proc "$1" /proc/net/tcp /proc/net/tcp6 && return 0
    if [ "${2:-}" = udp ]; then
        lib_port_in_proc "$1" /proc/net/udp /proc/net/udp6 && return 0
    fi
    return 1
}
# PORT_LO..PORT_HI: a block below the ephemeral range (or above it, if there is no room below).
lib_port_range() {
    local eph_lo eph_hi
    read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { eph_lo=32768 eph_hi=60999; }
    PORT_LO=20000
    PORT_HI=31999
    if [ "$eph_lo" -le "$PORT_HI" ]; then PORT_HI=$((eph_lo - 1)); fi
    if [ $((PORT_HI - PORT_LO)) -lt 1000 ]; then
        PORT_LO=10000
        if [ $((PORT_HI - PORT_LO)) -lt 1000 ]; then
            if [ $((65535 - eph_hi)) -ge 1000 ]; then
                PORT_LO=$((eph_hi + 1)) PORT_HI=65535
            else
                PORT_LO=10000 PORT_HI=65535 # no room outside the ephemeral range: random then
                echo "lib.sh: ephemeral range $eph_lo-$eph_hi leaves no room; ports may collide" >&2
            fi
        fi
    fi
}
lib_port_range
port() {
    local p tries=0
    while :; do
        tries=$((tries + 1))
        if [ "$tries" -gt 2000 ]; then
            echo "${KEPT_PREFIX}no free port in $PORT_LO-$PORT_HI after 2000 tries" >&2
            exit 2
        fi
        p=$((PORT_LO + (RANDOM * 32768 + RANDOM) % (PORT_HI - PORT_LO + 1)))
        case "$LIB_PORTS_GIVEN" in *" $p "*) continue ;; esac
        port_busy "$p" "${2:-}" || break
    done
    LIB_PORTS_GIVEN="$LIB_PORTS_GIVEN$p "
    printf -v "$1" '%s' "$p"
}
wait_until() {
    local deadline
    deadline=$(($(now_ms) + $(lib_secs_to_ms "$1")))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
wait_port() { wait_until "${2:-10}" listening "$1" "${3:-127.0.0.1}"; }

# ---------------------------------------------------------------- numbers
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
fmt() { awk -v x="$1" -v d="${2:-0}" 'BEGIN { if (x == "" || x == "n/a") print "n/a"; else printf "%.*f", d, x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
busy_pct() {
    local a b c d e f g h t1 i1 t2 i2
    read -r _ a b c d e f g h _ </proc/stat
    t1=$((a + b + c + d + e + f + g + h)) i1=$((d + e))
    sleep 1
    read -r _ a b c d e f g h _ </proc/stat
    t2=$((a + b + c + d + e + f + g + h)) i2=$((d + e))
    echo $((100 * ((t2 - t1) - (i2 - i1)) / (t2 - t1 > 0 ? t2 - t1 : 1)))
}

# ---------------------------------------------------------------- nginx
nginx_main() {
    printf 'daemon off;\nworker_processes 1;\npid %s;\nerror_log %s %s;\nevents { worker_connections %s; }\n' "$1" "$2" "$3" "$4"
}

nginx_temp_paths() {
    local d=$1
    echo "client_body_temp_path $d/client_body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fastcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;"
}
