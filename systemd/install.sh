#!/bin/sh
# Install corda-ha-supervisor on one host, from a clone of its repository.
#
#   sudo sh systemd/install.sh                 # the real thing (root, systemd)
#   sh systemd/install.sh --root /tmp/x --no-systemctl   # into a scratch root (tests)
#
# Options: --root DIR (prefix every path; default /), --user NAME (the node's user,
# default corda; created as a system user when missing and --root is /),
# --no-systemctl (do not touch systemd), --python PYTHON (default python3).
# What it does, in order:
#   1. the node's user (system user, home /opt/corda, no login shell)
#   2. a virtualenv in /opt/corda-ha-supervisor/venv with this package
#   3. /etc/corda-ha-supervisor/ (root:USER 0750), supervisor.conf from
#      config/supervisor.conf unless one exists (root:USER 0640: the supervisor,
#      running as USER, reads it; only root writes it), env (root 0600: systemd reads
#      it as root, e.g. CORDA_HA_DB_PASSWORD=...)
#   4. the unit file and the README (the unit's Documentation=)
#   5. disables a plain corda.service (the supervisor runs the node now), then
#      daemon-reload and enable (not start: edit supervisor.conf first, then
#      `systemctl start corda-ha-supervisor`)
set -eu

root=/ user=corda systemctl=yes python=python3
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$2; shift 2 ;;
        --user) user=$2; shift 2 ;;
        --no-systemctl) systemctl=no; shift ;;
        --python) python=$2; shift 2 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
src=$(cd "$(dirname "$0")/.." && pwd)
r=${root%/}

if ! id "$user" >/dev/null 2>&1; then
    if [ "$r" = "" ]; then
        useradd --system --home-dir /opt/corda --shell /usr/sbin/nologin "$user"
    else
        echo "install.sh: user $user does not exist; files stay root-owned in $root" >&2
    fi
fi
group=$(id -gn "$user" 2>/dev/null || echo root)

install -d -m 0755 "$r/opt/corda-ha-supervisor"
"$python" -m venv "$r/opt/corda-ha-supervisor/venv"
"$r/opt/corda-ha-supervisor/venv/bin/pip" install --quiet "$src"

install -d -m 0750 -o root -g "$group" "$r/etc/corda-ha-supervisor"
if [ ! -e "$r/etc/corda-ha-supervisor/supervisor.conf" ]; then
    install -m 0640 -o root -g "$group" "$src/config/supervisor.conf" \
        "$r/etc/corda-ha-supervisor/supervisor.conf"
fi
if [ ! -e "$r/etc/corda-ha-supervisor/env" ]; then
    install -m 0600 -o root -g root /dev/null "$r/etc/corda-ha-supervisor/env"
fi
install -D -m 0644 "$src/systemd/corda-ha-supervisor.service" \
    "$r/etc/systemd/system/corda-ha-supervisor.service"
install -D -m 0644 "$src/README.md" "$r/usr/share/doc/corda-ha-supervisor/README.md"

if [ "$systemctl" = yes ]; then
    if systemctl list-unit-files corda.service >/dev/null 2>&1; then
        systemctl disable --now corda.service || true
    fi
    systemctl daemon-reload
    systemctl enable corda-ha-supervisor
fi
echo "installed. Next: edit $r/etc/corda-ha-supervisor/supervisor.conf, put the database"
echo "password in $r/etc/corda-ha-supervisor/env (CORDA_HA_DB_PASSWORD=...), check with"
echo "  $r/opt/corda-ha-supervisor/venv/bin/corda-ha-supervisor check-config --config $r/etc/corda-ha-supervisor/supervisor.conf"
echo "then: systemctl start corda-ha-supervisor"
