#!/bin/sh
# Install kvip-bgp as a systemd service on a bare-metal host (`make install-systemd`).
#
#   - a virtualenv at /opt/kvip-bgp/venv with this checkout pip-installed into it
#     (the same `pip install .` the Dockerfile does);
#   - the unit at /etc/systemd/system/kvip-bgp.service;
#   - /etc/kvip-bgp/config.yaml from config.example.yaml, only if it does not exist;
#   - `systemctl daemon-reload`, only when systemd is running.
#
# Environment:
#   DESTDIR           stage everything under this directory instead of / (packaging, tests);
#                     systemctl is never called then
#   PYTHON            interpreter for the virtualenv (default: python3, must be >= 3.11)
#   PIP_INSTALL_ARGS  extra arguments for `pip install` (e.g. --no-deps for a quick test)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
destdir=${DESTDIR:-}
python=${PYTHON:-python3}

venv=/opt/kvip-bgp/venv
unit_dir=/etc/systemd/system
conf_dir=/etc/kvip-bgp

say() { printf 'install-systemd: %s\n' "$*"; }

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
    say "$python is older than 3.11; set PYTHON=/path/to/python3.11 or newer" >&2
    exit 1
}

say "virtualenv $destdir$venv"
if [ ! -x "$destdir$venv/bin/python" ]; then
    mkdir -p "$(dirname "$destdir$venv")"
    "$python" -m venv "$destdir$venv"
fi
say "pip install $src"
# shellcheck disable=SC2086  # PIP_INSTALL_ARGS is a list of words on purpose
"$destdir$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --upgrade ${PIP_INSTALL_ARGS:-} "$src"

say "unit $destdir$unit_dir/kvip-bgp.service"
install -d -m 0755 "$destdir$unit_dir"
install -m 0644 "$here/kvip-bgp.service" "$destdir$unit_dir/kvip-bgp.service"

install -d -m 0750 "$destdir$conf_dir"
if [ -e "$destdir$conf_dir/config.yaml" ]; then
    say "keeping the existing $destdir$conf_dir/config.yaml"
else
    say "example config $destdir$conf_dir/config.yaml (edit it)"
    install -m 0640 "$here/config.example.yaml" "$destdir$conf_dir/config.yaml"
fi

# sd_booted(3): systemd is the running init exactly when /run/systemd/system exists.
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "done. Next:"
    say "  $venv/bin/kvip-bgp check-config --config $conf_dir/config.yaml"
    say "  systemctl enable --now kvip-bgp     (systemctl restart kvip-bgp after an upgrade)"
else
    if [ -n "$destdir" ]; then
        say "staged under DESTDIR=$destdir; systemctl not called"
    else
        say "systemd is not running here (no /run/systemd/system); systemctl not called"
    fi
    say "done. On the target host, as root:"
    say "  systemctl daemon-reload"
    say "  $venv/bin/kvip-bgp check-config --config $conf_dir/config.yaml"
    say "  systemctl enable --now kvip-bgp"
fi
