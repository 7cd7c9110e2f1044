#!/usr/bin/env bash
# Run every test on a fresh Debian machine: installs Dovecot (Debian package) if missing,
# the locked dependencies (requirements.lock) and the project into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the tests need from Debian: Dovecot, and venv for Debian's own python3 (which ships
# without it). The Dovecot package tries to start the system service and may be refused:
# the tests run private instances of their own, so that refusal is harmless.
packages=""
[ -x /usr/sbin/dovecot ] || packages="dovecot-imapd"
python3 -c "import ensurepip" 2>/dev/null || packages="$packages python3-venv"
if [ -n "$packages" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
fi
python3 -m venv .venv
# The locked versions, checked against their hashes; the project itself adds none
# (README: "The lock file").
.venv/bin/pip install -q --require-hashes -r requirements.lock
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
exec .venv/bin/python -m pytest -q "$@"
