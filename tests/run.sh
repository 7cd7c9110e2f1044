#!/usr/bin/env bash
# Run every test on a fresh Debian machine: installs Dovecot (Debian package) if missing,
# the locked dependencies (requirements.lock) and the project into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/sbin/dovecot ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    # The package tries to start the system service and may be refused: the tests run
    # private instances of their own, so that refusal is harmless.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dovecot-imapd >/dev/null
fi
python3 -m venv .venv
# The locked versions, checked against their hashes; the project itself adds none
# (README: "The lock file").
.venv/bin/pip install -q --require-hashes -r requirements.lock
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
exec .venv/bin/python -m pytest -q "$@"
