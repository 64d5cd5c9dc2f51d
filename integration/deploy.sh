#!/usr/bin/env bash
# deploy/ as shipped, on a machine where systemd is not running (CI's container):
#  - the install lines in deploy/frontgate.service's comment (the same as README's) run as
#    written, as root, from the clone; in a private mount namespace with overlays on /etc and
#    /usr/local, so the user, the unit and the binary never reach the host;
#  - `systemd-analyze verify` passes the installed unit without a word;
#  - the sysusers.d file made a system user; the route file is root:frontgate 0640;
#  - the unit's ExecStartPre, ExecStart and ExecReload run as its User=/Group= (setpriv, as
#    systemd would): check passes, the gateway serves, `frontgate health` says so, SIGHUP
#    reloads; another unprivileged uid cannot read the file;
#  - README's "See it work" lines run as they are (ports moved to free ones) and curl gets 200.
# Needs root, systemd (systemd-analyze, systemd-sysusers), util-linux (unshare, setpriv,
# runuser), openssl and curl. The release binary must be at target/release/frontgate.
# dir and the ports are set by lib.sh's make_temp and port (printf -v):
# shellcheck disable=SC2154
# check evaluates its second argument later (single quotes on purpose; rc is read there), and
# deploy_cleanup runs from the EXIT trap:
# shellcheck disable=SC2016,SC2034,SC2317
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SUITE=deploy
# shellcheck source=integration/lib.sh
. "$HERE/lib.sh"
UNIT="$REPO/deploy/frontgate.service"

if [ -z "${FRONTGATE_DEPLOY_NAMESPACE:-}" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "$SUITE: needs root: it installs as the unit's comment says (in a private mount namespace)" >&2
        exit 2
    fi
    exec unshare --mount --propagation private env FRONTGATE_DEPLOY_NAMESPACE=1 bash "$0" "$@"
fi

make_temp dir frontgate-deploy
deploy_cleanup() {
    kill_started "$STOP_GRACE"
    umount -l /usr/local /etc 2>/dev/null
    cleanup
}
trap deploy_cleanup EXIT
trap 'exit 130' INT TERM
check() { if eval "$2"; then ok "$1"; else fail "$1" "${3:-}"; fi; }

[ -x "$REPO/target/release/frontgate" ] || { echo "$SUITE: build target/release/frontgate first" >&2; exit 2; }
for top in /etc /usr/local; do
    layer="$dir/overlay${top//\//_}"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$top,upperdir=$layer/upper,workdir=$layer/work" "$top" ||
        { echo "$SUITE: cannot put an overlay on $top" >&2; exit 2; }
done

# ---------------------------------------------------------------- install as documented
# The unit's comment: "#   COMMAND" lines between "Install" and the paragraph after them.
mapfile -t steps < <(sed -n '/^# systemd unit for frontgate. Install/,/^# The route file holds/p' "$UNIT" | sed -n 's/^#   //p')
# README's install block and later steps say the same, in the same order.
mapfile -t readme < <(sed -n '/<!-- install: /,/^   ```$/p' "$REPO/README.md" | sed -n 's/^   \(install\|systemd\|systemctl\)/\1/p')
readme+=("$(grep -o 'runuser -u frontgate -- frontgate check --config /etc/frontgate/routes.yaml' "$REPO/README.md" | head -1)")
readme+=("$(grep -o 'systemctl enable --now frontgate' "$REPO/README.md" | head -1)")
documented=$(printf '%s\n' "${steps[@]}" | grep -v '^(')
check "README's install lines are the unit comment's, in order (${#readme[@]} lines)" \
    '[ "$(printf "%s\n" "${readme[@]}")" = "$documented" ]' \
    "README: $(printf '%s; ' "${readme[@]}") unit: ${documented//$'\n'/; }"

port listen_port
port metrics_port
ran=0
for step in "${steps[@]}"; do
    case "$step" in
    systemctl\ *)
        # Needs a running systemd: start/reload are done below as the unit says.
        continue ;;
    \(*)
        # "(edit /etc/frontgate/routes.yaml, then)": free ports for this run, the way the
        # comment says to replace the file.
        sed -e "s/127\.0\.0\.1:8443\b/127.0.0.1:$listen_port/" -e "s/127\.0\.0\.1:9100\b/127.0.0.1:$metrics_port/" \
            /etc/frontgate/routes.yaml > "$dir/edited.yaml"
        install -m 0640 -o root -g frontgate "$dir/edited.yaml" /etc/frontgate/routes.yaml
        check "the edit put the free ports in the installed file" \
            'grep -q "127.0.0.1:$listen_port" /etc/frontgate/routes.yaml && grep -q "127.0.0.1:$metrics_port" /etc/frontgate/routes.yaml'
        continue ;;
    esac
    if out=$(cd "$REPO" && bash -e -c "$step" 2>&1); then
        ok "install step: $step"
        ran=$((ran + 1))
    else
        fail "install step: $step" "$out"
    fi
done
check "every install step ran (binary, sysusers file, user, directory, route file, unit, check)" '[ "$ran" -eq 7 ]' "ran $ran"

# ---------------------------------------------------------------- what the steps made
out=$(systemd-analyze verify --man=no --generators=no /etc/systemd/system/frontgate.service 2>&1)
rc=$?
check "systemd-analyze verify passes the installed unit without a word" '[ "$rc" -eq 0 ] && [ -z "$out" ]' "$out"
sed 's|^ExecStart=/usr/local/bin/frontgate|ExecStart=/usr/local/bin/frontgate-missing|' /etc/systemd/system/frontgate.service > "$dir/broken.service"
out=$(systemd-analyze verify --man=no --generators=no "$dir/broken.service" 2>&1)
rc=$?
check "systemd-analyze verify refuses the unit with a missing binary (it checks what it says)" \
    '[ "$rc" -ne 0 ] && grep -q "frontgate-missing" <<<"$out"' "$out"

unit_value() { sed -n "s/^$1=//p" /etc/systemd/system/frontgate.service; }
user=$(unit_value User)
group=$(unit_value Group)
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd "$user")
check "the unit runs as the sysusers.d user, a system user with no login" \
    '[ "$user" = frontgate ] && [ "$group" = frontgate ] && [ "${uid:-1000}" -lt 1000 ] && [ "$home" = /var/lib/frontgate ] && [ "$shell" = /usr/sbin/nologin ]' \
    "User=$user Group=$group passwd: uid=${uid:-} home=${home:-} shell=${shell:-}"
check "the unit has no DynamicUser= (its uid could not read the file)" '! grep -q "^DynamicUser=" /etc/systemd/system/frontgate.service'
check "the route file is root:frontgate 0640" '[ "$(stat -c "%U:%G %a" /etc/frontgate/routes.yaml)" = "root:frontgate 640" ]' \
    "$(stat -c "%U:%G %a" /etc/frontgate/routes.yaml)"

# ---------------------------------------------------------------- the unit's commands as its user
# As systemd runs the unit's commands: its User= and Group=, their groups, no capability.
# An array, not a function: started in the background it is then the gateway's own pid.
as_unit_user=(setpriv --reuid="$user" --regid="$group" --init-groups --inh-caps=-all --)
as_unit_user() { "${as_unit_user[@]}" "$@"; }
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all -- "$@"; }
read -r -a start_pre <<<"$(unit_value ExecStartPre)"
read -r -a start <<<"$(unit_value ExecStart)"
mapfile -t reload_lines < <(unit_value ExecReload)

out=$(as_unit_user "${start_pre[@]}" 2>&1)
rc=$?
check "ExecStartPre (check) passes as $user" '[ "$rc" -eq 0 ] && grep -q "syntax is ok" <<<"$out"' "$out"
"${as_unit_user[@]}" "${start[@]}" > "$dir/log" 2>&1 &
PIDS+=("$!")
main_pid=$!
wait_port "$listen_port" 10
healthy() { as_unit_user /usr/local/bin/frontgate health --config /etc/frontgate/routes.yaml; }
wait_until 10 healthy
out=$(healthy 2>&1)
rc=$?
check "ExecStart serves: frontgate health (as $user) gets 200 from the metrics port" \
    '[ "$rc" -eq 0 ] && grep -q "http://127.0.0.1:$metrics_port/healthz answered 200" <<<"$out"' "$out"
check "the gateway runs as $user's uid" '[ -n "$uid" ] && [ "$(awk "/^Uid:/ {print \$2}" "/proc/$main_pid/status")" = "$uid" ]'
check "the gateway listens where the installed file says" 'listening "$listen_port"'

ran=0
for line in "${reload_lines[@]}"; do
    read -r -a command <<<"${line//\$MAINPID/$main_pid}"
    if out=$(as_unit_user "${command[@]}" 2>&1); then ran=$((ran + 1)); else fail "ExecReload=$line" "$out"; fi
done
check "ExecReload's check and SIGHUP run as $user" '[ "$ran" -eq 2 ] && [ "${#reload_lines[@]}" -eq 2 ]'
wait_until 10 grep -q "configuration reloaded" "$dir/log"
check "SIGHUP reloaded the file" 'grep "configuration reloaded" "$dir/log" | grep -q SIGHUP && alive "$main_pid"' "$(tail -3 "$dir/log")"

out=$(as_nobody cat /etc/frontgate/routes.yaml 2>&1)
rc=$?
check "another unprivileged uid (nobody) cannot read the route file" '[ "$rc" -ne 0 ] && grep -q "Permission denied" <<<"$out"' "$out"
out=$(as_nobody /usr/local/bin/frontgate check --config /etc/frontgate/routes.yaml 2>&1)
rc=$?
check "nor can frontgate check as nobody" '[ "$rc" -eq 1 ] && grep -q "Permission denied" <<<"$out"' "$out"
kill_started "$STOP_GRACE"
PIDS=()

# ---------------------------------------------------------------- README: see it work
# The lines under the see-it-work marker, run one by one in an empty directory while the
# gateway runs on the example (README's first command), the example's ports moved to free ones.
port site_port
port demo_port
port demo_metrics
work="$dir/see-it-work"
mkdir -p "$work"
moved() { sed -e "s/\b8443\b/$demo_port/g" -e "s/\b9444\b/$site_port/g" -e "s/\b9100\b/$demo_metrics/g"; }
moved < "$REPO/routes.example.yaml" > "$work/routes.example.yaml"
mapfile -t demo < <(sed -n '/<!-- see-it-work:/,/^```$/p' "$REPO/README.md" | sed -e '1,2d' -e '$d')
check "README's see-it-work block has three lines" '[ "${#demo[@]}" -eq 3 ]' "$(printf '%s; ' "${demo[@]}")"
(cd "$work" && exec "$REPO/target/release/frontgate" run --config routes.example.yaml) 2> "$work/log" &
PIDS+=("$!")
wait_port "$demo_port" 10
for line in "${demo[@]}"; do
    line=$(moved <<<"$line")
    case "$line" in
    *' &')
        (cd "$work" && exec bash -c "exec ${line% &}") > "$work/site.log" 2>&1 &
        PIDS+=("$!")
        check "see it work: the site starts ($line)" 'wait_port "$site_port" 10' ;;
    curl\ *)
        out=$(cd "$work" && bash -e -c "$line" 2>&1)
        rc=$?
        check "see it work: curl prints 200 through frontgate, the site's certificate verified" \
            '[ "$rc" -eq 0 ] && [ "$out" = 200 ]' "$line: $out" ;;
    *)
        out=$(cd "$work" && bash -e -c "$line" 2>&1)
        rc=$?
        check "see it work: ${line%% -*}" '[ "$rc" -eq 0 ]' "$line: $out" ;;
    esac
done
check "see it work: the log names the route and the site" \
    'wait_until 5 grep -q "route=\"proxy.example.com\" .*backend=127.0.0.1:$site_port .*outcome=closed" "$work/log"' \
    "$(grep "connection closed" "$work/log" | tail -2)"
out=$(curl -s "127.0.0.1:$demo_metrics/stats")
check "see it work: /stats counts the connection" 'grep -q "\"proxy.example.com\":{\"closed\":1}" <<<"$out"' "$out"
finish
