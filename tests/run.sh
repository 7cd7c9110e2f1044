#!/usr/bin/env bash
# Run every test on a fresh Debian machine: installs Dovecot, SabreDAV with PHP and Apache
# with mod_dav (Debian packages) if missing,
# unpacks Cyrus IMAP (Debian packages, see tests/cyrus.py) if missing,
# the locked dependencies (requirements.lock) and the project into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the tests need from Debian: Dovecot, SabreDAV with PHP's command line and SQLite
# (tests/sabredav.py), Apache with htpasswd (tests/apache.py), and venv for Debian's own
# python3 (which ships without it). The Dovecot and Apache packages try to start their
# system services and may be refused: the tests run private instances of their own, on
# ports of their own, so that refusal is harmless.
packages=""
[ -x /usr/sbin/dovecot ] || packages="dovecot-imapd"
if [ ! -f /usr/share/php/Sabre/autoload.php ] || ! php -m 2>/dev/null | grep -x pdo_sqlite >/dev/null
then
    packages="$packages php-cli php-sqlite3 php-sabre-dav"
fi
[ -x /usr/sbin/apache2 ] && [ -x /usr/bin/htpasswd ] || packages="$packages apache2 apache2-utils"
python3 -c "import ensurepip" 2>/dev/null || packages="$packages python3-venv"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
# Cyrus IMAP with CalDAV (tests/cyrus.py): its packages conflict with Dovecot's, so they
# are unpacked, not installed, into a cache folder kept between runs, and only the
# libraries they depend on are installed. As root, Cyrus runs as nobody, who cannot enter
# root's home: tests/cyrus.py looks in the same folder.
if [ "$(id -u)" -eq 0 ]; then
    cyrus_tree=/var/cache/bascule/cyrus-imapd
else
    cyrus_tree="${XDG_CACHE_HOME:-$HOME/.cache}/bascule/cyrus-imapd"
fi
cyrus_ready() {
    local programs="$cyrus_tree/usr/lib/cyrus/bin"
    [ -x "$programs/master" ] && [ -x "$programs/imapd" ] && [ -x "$programs/httpd" ] || return 1
    local libraries linked
    libraries=$(dirname "$cyrus_tree"/usr/lib/*/libcyrus.so.0)
    linked=$(LD_LIBRARY_PATH="$libraries" ldd "$programs/master" "$programs/imapd" \
        "$programs/httpd") || return 1
    ! grep -q "not found" <<<"$linked"
}
if [ -n "$packages" ] || ! cyrus_ready; then
    $sudo apt-get update -qq
fi
if [ -n "$packages" ]; then
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
fi
if ! cyrus_ready; then
    debs=$(mktemp -d)
    (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root \
        cyrus-common cyrus-imapd cyrus-caldav)
    # Every "lib..." package named in their Depends, first of any alternatives; none of the
    # others (an MTA, adduser...) is needed to run the unpacked programs. --no-upgrade
    # leaves the libraries already installed as they are.
    libraries=$(for deb in "$debs"/*.deb; do dpkg-deb -f "$deb" Depends; done \
        | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/[[:space:]]//g' | grep '^lib' | sort -u)
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        --no-upgrade $libraries >/dev/null
    rm -rf "$cyrus_tree.new"
    mkdir -p "$cyrus_tree.new"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$cyrus_tree.new"; done
    rm -rf "$debs" "$cyrus_tree"
    mv "$cyrus_tree.new" "$cyrus_tree"
    cyrus_ready || { echo "run.sh: Cyrus's programs still miss libraries" >&2; exit 1; }
fi
python3 -m venv .venv
# The locked versions, checked against their hashes; the project itself adds none
# (README: "The lock file").
.venv/bin/pip install -q --require-hashes -r requirements.lock
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
# This run's own folder for pytest's temporary files: in the folder pytest shares between
# the sessions of one user, a session starting may remove the folders of one still running,
# and with them the files of its private servers (seen: Cyrus losing its configuration).
basetemp=$(mktemp -d -t bascule-tests.XXXXXX)
trap 'rm -rf "$basetemp"' EXIT
.venv/bin/python -m pytest -q --basetemp "$basetemp" "$@"
