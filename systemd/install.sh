#!/bin/sh
# Install corda-ha-supervisor on one host, from a clone of its repository.
#
#   sudo sh systemd/install.sh --dry-run     # print the plan, change nothing
#   sudo sh systemd/install.sh               # print the plan, then carry it out
#   sh systemd/install.sh --root /tmp/x --no-systemctl   # into a scratch root (tests)
#
# Options:
#   --user NAME    the user the supervisor, its guard and the node run as. Default: the
#                  User= of an earlier install's drop-in, else corda. Created (a system
#                  user, no login shell, home /opt/corda) when missing, except under --root.
#   --group NAME   their group. Default: the drop-in's Group= when it names the same user,
#                  else the user's primary group, else a new group named like the user.
#   --take-over-corda-service
#                  disable and stop a corda.service on this host: the Corda node it runs
#                  stops AT ONCE, and nothing runs it until the supervisor is configured
#                  and started. Without it an existing corda.service is left alone (and the
#                  supervisor is not enabled); the installer prints the two commands that
#                  switch over when the operator is ready.
#   --dry-run      print the plan only; change nothing
#   --root DIR     prefix every path with DIR (default /); systemctl, users and groups
#                  are still this machine's (add --no-systemctl for a scratch root)
#   --no-systemctl never call systemctl
#   --python PY    the interpreter of the virtualenv (default python3; 3.11 or newer)
#
# It prints its plan first (each step, each path with its owner and mode), then carries it
# out. Running it again is safe: it replaces what it owns (the virtualenv's package, the
# unit file, the documentation), and leaves alone what an operator edits: supervisor.conf,
# env, and the drop-in user.conf when it names the same user and group. It never stops or
# disables a running or enabled corda.service unless --take-over-corda-service is given.
#
# The unit's user and group are set by a drop-in,
# /etc/systemd/system/corda-ha-supervisor.service.d/user.conf, never by editing the
# shipped unit (which says User=corda, Group=corda).
set -eu
umask 022

die() { echo "install.sh: $*" >&2; exit 1; }

root=/ user= group= systemctl=yes python=python3 dry_run=no take_over=no
while [ $# -gt 0 ]; do
    case "$1" in
        --root|--user|--group|--python)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --root) root=$2 ;; --user) user=$2 ;; --group) group=$2 ;;
                --python) python=$2 ;;
            esac
            shift 2 ;;
        --no-systemctl) systemctl=no; shift ;;
        --dry-run) dry_run=yes; shift ;;
        --take-over-corda-service) take_over=yes; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
src=$(cd "$(dirname "$0")/.." && pwd)
r=${root%/}
if [ "$r" != "" ]; then
    [ -d "$r" ] || die "--root $root: no such directory"
    r=$(cd "$r" && pwd) root=$r
fi

# ------------------------------------------------------------------ what is there now
name_ok() { case $1 in ''|-*|*[!A-Za-z0-9_.-]*) return 1 ;; esac; }
if [ "$dry_run" = no ] && [ "$(id -u)" != 0 ]; then
    die "run it as root (or with --dry-run to see the plan)"
fi
[ "$take_over" = no ] || [ "$systemctl" = yes ] ||
    die "--take-over-corda-service needs systemctl (drop --no-systemctl)"

pyver=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3]); sys.exit(sys.version_info < (3, 11))' 2>/dev/null) ||
    die "$python: Python 3.11 or newer is needed (found: ${pyver:-no such interpreter})"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$src/pyproject.toml" | head -n 1)

opt=$r/opt/corda-ha-supervisor
venv=$opt/venv
etc=$r/etc/corda-ha-supervisor
conf=$etc/supervisor.conf
envfile=$etc/env
unit=$r/etc/systemd/system/corda-ha-supervisor.service
dropdir=$unit.d
dropin=$dropdir/user.conf
doc=$r/usr/share/doc/corda-ha-supervisor
nodedir=$r/opt/corda

old_user= old_group=
if [ -f "$dropin" ]; then
    old_user=$(sed -n 's/^User=//p' "$dropin" | tail -n 1)
    old_group=$(sed -n 's/^Group=//p' "$dropin" | tail -n 1)
fi
user_from="--user"
if [ -z "$user" ]; then
    if [ -n "$old_user" ]; then user=$old_user user_from="the installed drop-in"
    else user=corda user_from="the default"; fi
fi
name_ok "$user" || die "--user: not a user name: '$user'"
user_exists=no
id -u "$user" >/dev/null 2>&1 && user_exists=yes
group_from="--group"
if [ -z "$group" ]; then
    if [ -n "$old_group" ] && [ "$user" = "$old_user" ]; then
        group=$old_group group_from="the installed drop-in"
    elif [ "$user_exists" = yes ]; then
        group=$(id -gn "$user") group_from="$user's primary group"
    else
        group=$user group_from="named like the user"
    fi
fi
name_ok "$group" || die "--group: not a group name: '$group'"
group_exists=no
getent group "$group" >/dev/null 2>&1 && group_exists=yes
if [ "$r" != "" ] && { [ "$user_exists" = no ] || [ "$group_exists" = no ]; }; then
    die "user $user or group $group does not exist on this machine; under --root the" \
        "installer creates neither: pick existing ones with --user/--group"
fi

perm() { set -- $(stat -c '%U %G %a' "$1"); printf '%s:%s %04o' "$1" "$2" $((0$3)); }
# svc_can PATH BIT: can the service (user $user, group $group) read (BIT 4) or enter (1)
# PATH? Supplementary groups are not counted (a warning may be too cautious, never wrong).
svc_can() {
    set -- "$2" $(stat -c '%U %G %a' "$1")
    if [ "$2" = "$user" ]; then by=6; elif [ "$3" = "$group" ]; then by=3; else by=0; fi
    [ $(( (0$4 >> by) & $1 )) -ne 0 ]
}

warnings= left=
warn() { warnings="$warnings
  warning: $*"; }
keep() { left="$left
  $*"; }

if [ -d "$etc" ] && [ ! -x "$etc" ]; then
    warn "this user cannot look inside $etc: the plan may be wrong about its files" \
        "(run the dry run as root)"
fi
if [ -d "$etc" ]; then
    etc_act=keep
    keep "$etc ($(perm "$etc"))"
    svc_can "$etc" 1 || warn "$user:$group cannot enter $etc ($(perm "$etc")):" \
        "chgrp $group $etc && chmod 0750 $etc"
else
    etc_act=create
fi
if [ -e "$conf" ]; then
    conf_act=keep
    keep "$conf ($(perm "$conf"), as edited)"
    svc_can "$conf" 4 || warn "$user:$group cannot read $conf ($(perm "$conf")):" \
        "chgrp $group $conf && chmod 0640 $conf"
else
    conf_act=create
fi
if [ -e "$envfile" ]; then
    env_act=keep
    keep "$envfile ($(perm "$envfile"), as edited)"
    [ $((0$(stat -c '%a' "$envfile") & 077)) -eq 0 ] ||
        warn "$envfile ($(perm "$envfile")) holds the database password and is" \
            "open to others than its owner: chmod 0600 $envfile"
else
    env_act=create
fi
if [ ! -e "$unit" ]; then unit_act=create
elif cmp -s "$src/systemd/corda-ha-supervisor.service" "$unit"; then unit_act=same
else unit_act=replace; fi
if [ ! -e "$dropin" ]; then
    dropin_act=create
elif [ "$old_user" = "$user" ] && [ "$old_group" = "$group" ]; then
    dropin_act=keep
    keep "$dropin (User=$user Group=$group, as edited)"
else
    dropin_act=replace
fi
[ -d "$venv" ] && venv_act=upgrade || venv_act=create

# corda.service: a plain unit that runs the node without the supervisor.
corda=none supervisor_active=
if [ "$systemctl" = yes ]; then
    command -v systemctl >/dev/null 2>&1 || die "systemctl not found (use --no-systemctl)"
    c_active=$(systemctl is-active corda.service 2>/dev/null) || true
    [ -n "$c_active" ] || die "systemctl cannot tell whether corda.service runs" \
        "($(systemctl is-active corda.service 2>&1 | head -n 1)); with --no-systemctl the" \
        "installer calls no systemctl and the operator checks corda.service"
    c_enabled=$(systemctl is-enabled corda.service 2>/dev/null) || true
    c_listed=$(systemctl list-unit-files --no-legend corda.service 2>/dev/null) || true
    case $c_active in
        active|activating|deactivating|reloading|refreshing|failed) corda=present ;;
    esac
    case $c_enabled in ''|not-found) ;; *) corda=present ;; esac
    [ -z "$c_listed" ] || corda=present
    supervisor_active=$(systemctl is-active corda-ha-supervisor.service 2>/dev/null) || true
fi
if [ "$corda" = present ]; then
    corda_state="${c_active:-unknown}, ${c_enabled:-unknown}"
    [ "$take_over" = yes ] || keep "corda.service ($corda_state)"
fi

# ------------------------------------------------------------------ the steps
# Each step prints its line (numbered in the plan, [n/total] while carrying it out) and,
# in the phase "do", does what the line says. The decisions above are taken once, so the
# plan and the run cannot differ.
doing() { [ "$phase" = do ]; }
step() {
    n=$((n + 1))
    if doing; then printf '[%d/%d] %s\n' "$n" "$total" "$*"
    else printf '  %2d. %s\n' "$n" "$*"; fi
}
also() { printf '      %s\n' "$*"; }

step_user() {
    if [ "$group_exists" = yes ]; then
        step "group $group ($group_from): exists, left alone"
    else
        step "group $group ($group_from): create (groupadd --system $group)"
        if doing; then groupadd --system "$group"; fi
    fi
    if [ "$user_exists" = yes ]; then
        step "user $user ($user_from): exists, left alone"
    else
        step "user $user ($user_from): create (useradd --system, group $group, home" \
            "/opt/corda not created, shell /usr/sbin/nologin)"
        if doing; then
            useradd --system --gid "$group" --home-dir /opt/corda --no-create-home \
                --shell /usr/sbin/nologin "$user"
        fi
    fi
}

step_venv() {
    step "directory $opt: root:root 0755"
    if doing; then install -d -m 0755 -o root -g root "$opt"; fi
    if [ "$venv_act" = create ]; then
        step "virtualenv $venv (root:root, 0755): create with $python (Python $pyver)," \
            "install corda-ha-supervisor $version from $src"
    else
        step "virtualenv $venv (root:root): exists, reinstall corda-ha-supervisor" \
            "$version from $src into it"
    fi
    if doing; then
        "$python" -m venv "$venv"
        # built from a scratch copy: nothing written into the clone (no build/), and
        # two installs from one clone cannot trip over each other's build directory
        staging=$(mktemp -d)
        cp -R "$src/pyproject.toml" "$src/README.md" "$src/supervisor" "$staging/"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$staging"
        rm -rf "$staging"
    fi
}

step_etc() {
    if [ "$etc_act" = create ]; then
        step "directory $etc: create, root:$group 0750"
        if doing; then install -d -m 0750 -o root -g "$group" "$etc"; fi
    else
        step "directory $etc: exists ($(perm "$etc")), left alone"
    fi
    if [ "$conf_act" = create ]; then
        step "file $conf: create from config/supervisor.conf, root:$group 0640 (the" \
            "service reads it, only root writes it)"
        if doing; then
            install -m 0640 -o root -g "$group" "$src/config/supervisor.conf" "$conf"
        fi
    else
        step "file $conf: exists ($(perm "$conf")), left alone"
    fi
    if [ "$env_act" = create ]; then
        step "file $envfile: create empty, root:root 0600 (systemd reads it as root:" \
            "CORDA_HA_DB_PASSWORD=...)"
        if doing; then install -m 0600 -o root -g root /dev/null "$envfile"; fi
    else
        step "file $envfile: exists ($(perm "$envfile")), left alone"
    fi
}

step_unit() {
    case $unit_act in
        create) step "file $unit: install systemd/corda-ha-supervisor.service, root:root 0644" ;;
        replace) step "file $unit: replace with systemd/corda-ha-supervisor.service (the" \
            "installer's file: local changes belong in drop-ins), root:root 0644" ;;
        same) step "file $unit: already systemd/corda-ha-supervisor.service, root:root 0644" ;;
    esac
    if doing; then
        install -D -m 0644 -o root -g root "$src/systemd/corda-ha-supervisor.service" "$unit"
    fi
    case $dropin_act in
        create) step "file $dropin: create (its directory root:root 0755), root:root" \
            "0644: User=$user Group=$group" ;;
        keep) step "file $dropin: exists with User=$user Group=$group, left alone" ;;
        replace) step "file $dropin: replace (it says User=$old_user Group=$old_group)," \
            "root:root 0644: User=$user Group=$group" ;;
    esac
    if doing && [ "$dropin_act" != keep ]; then
        install -d -m 0755 -o root -g root "$dropdir"
        tmp=$(mktemp)
        printf '%s\n' \
            "# Written by systemd/install.sh: the user and group the supervisor, its guard" \
            "# and the node run as. Rerunning the installer with the same user keeps it." \
            "[Service]" "User=$user" "Group=$group" >"$tmp"
        install -m 0644 -o root -g root "$tmp" "$dropin"
        rm -f "$tmp"
    fi
}

step_docs() {
    step "documentation $doc: README.md, docs/*.md, benchmarks/*.md (the unit's" \
        "Documentation= and the README's links), root:root 0644"
    if doing; then
        install -D -m 0644 -o root -g root "$src/README.md" "$doc/README.md"
        install -d -m 0755 -o root -g root "$doc/docs" "$doc/benchmarks"
        install -m 0644 -o root -g root "$src"/docs/*.md "$doc/docs/"
        install -m 0644 -o root -g root "$src"/benchmarks/*.md "$doc/benchmarks/"
    fi
}

step_node_dir() {
    if [ -d "$nodedir" ]; then
        step "node directory $nodedir ($(perm "$nodedir")): the unit's WorkingDirectory," \
            "left alone"
    else
        step "node directory $nodedir: missing, not created: the Corda node's files go" \
            "there (owned by $user) before the supervisor can start"
    fi
}

step_systemd() {
    if [ "$systemctl" = no ]; then
        step "systemd: nothing (--no-systemctl): no daemon-reload, corda-ha-supervisor" \
            "not enabled, corda.service not looked at"
        return
    fi
    if [ "$corda" = present ] && [ "$take_over" = yes ]; then
        step "corda.service ($corda_state): TAKE OVER (--take-over-corda-service):" \
            "systemctl disable corda.service, then systemctl stop corda.service: the" \
            "Corda node it runs stops now and stays down until corda-ha-supervisor is" \
            "configured and started"
        if doing; then
            systemctl disable corda.service
            systemctl stop corda.service
        fi
    elif [ "$corda" = present ]; then
        step "corda.service ($corda_state): left alone, and corda-ha-supervisor NOT" \
            "enabled (never both on one host)"
    fi
    if [ "$corda" = present ] && [ "$take_over" = no ]; then
        step "systemd: systemctl daemon-reload"
        if doing; then systemctl daemon-reload; fi
    else
        step "systemd: systemctl daemon-reload, systemctl enable corda-ha-supervisor.service" \
            "(at boot; not started now)"
        if doing; then
            systemctl daemon-reload
            systemctl enable corda-ha-supervisor.service
        fi
    fi
}

steps() {
    n=0
    step_user
    step_venv
    step_etc
    step_unit
    step_docs
    step_node_dir
    step_systemd
}

# ------------------------------------------------------------------ plan, then do it
echo "Plan: install corda-ha-supervisor $version from $src into ${root}, for user" \
    "$user, group $group:"
phase=plan total=0
steps
total=$n
[ -z "$warnings" ] || printf '%s\n' "$warnings"
echo "End of plan."
if [ "$dry_run" = yes ]; then
    echo "Dry run (--dry-run): nothing was done."
    exit 0
fi
echo "Carrying it out:"
phase=do
steps
echo "Done."
[ -z "$left" ] || { printf 'Left alone:'; printf '%s\n' "$left"; }
[ -z "$warnings" ] || printf '%s\n' "$warnings"

cli=/opt/corda-ha-supervisor/venv/bin/corda-ha-supervisor
echo "Next:"
echo "  1. edit $r/etc/corda-ha-supervisor/supervisor.conf and put the database password"
echo "     in $r/etc/corda-ha-supervisor/env (CORDA_HA_DB_PASSWORD=...);"
echo "  2. the database, as a DBA sets it up: /usr/share/doc/corda-ha-supervisor/README.md (Set up the database);"
echo "  3. check: $r$cli check-config --config $r/etc/corda-ha-supervisor/supervisor.conf"
if [ "$corda" = present ] && [ "$take_over" = no ]; then
    echo "  4. corda.service exists and was left alone (it runs the node without the"
    echo "     supervisor: never both). When ready, switch over (the node stops, then the"
    echo "     supervisor runs it):"
    echo "       systemctl disable --now corda.service"
    echo "       systemctl enable --now corda-ha-supervisor"
elif [ "$systemctl" = no ]; then
    echo "  4. (--no-systemctl: nothing enabled, corda.service not looked at) with no other"
    echo "     unit running the node: systemctl daemon-reload, then"
    echo "       systemctl enable --now corda-ha-supervisor"
else
    echo "  4. start: systemctl start corda-ha-supervisor"
fi
if [ "$supervisor_active" = active ]; then
    echo "  corda-ha-supervisor is running the old code until its next restart (a restart"
    echo "  stops its node: on the active host, hand over first)."
fi
