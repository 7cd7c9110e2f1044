"""Start and stop a private SabreDAV (CalDAV and CardDAV, Debian ``php-sabre-dav``) for
tests, on 127.0.0.1, laid out as Nextcloud lays out its DAV server.

Each instance is PHP's built-in web server (``php -S``) running a ``server.php`` written
into its folder, with its SQLite database (principals, users, calendars, address books)
beside it. Accounts are rows of the ``users`` table, checked with Basic auth; each gets a
principal, a calendar ``personal`` and an address book ``contacts``, which Nextcloud makes
for a user too. The DAV tree is served under ``/remote.php/dav/`` and
``/.well-known/caldav`` and ``carddav`` redirect there (301), as on Nextcloud; any other
path answers 404, so a client given the server's address discovers the principal through
the well-known redirect (RFC 6764).

Facts learned here (Debian 12, checked 2026-12-07):

- Debian 12 ships SabreDAV **1.8.12** (2013) with sabre/vobject 2.1.7, on PHP 8.2; neither
  Debian 13 nor bookworm-backports has any SabreDAV, and no registry reachable here carries
  sabre/dav 4.x, the series Nextcloud runs. So this is an old SabreDAV, not Nextcloud: what
  it shows about the protocol (discovery, MKCALENDAR, extended MKCOL, conditional writes,
  ETags) holds for its successors; what it shows of scheduling, validation and rewriting
  does not.
- It runs on PHP 8.2 only with deprecations ignored (dynamic properties, ``E_DEPRECATED``):
  an error handler turning them into exceptions makes every request answer 500.
- Its PDO auth backend is Digest only; Basic auth is a small ``AbstractBasic`` here that
  checks the Digest hash ``md5(login:realm:password)`` the ``users`` table keeps.
- It keeps what it was given byte for byte (no refolding, no CATEGORIES split) and answers
  each PUT with the ETag it stored (the MD5 of the body, quoted).
- It does no implicit scheduling (RFC 6638 came after 1.8): PUT and DELETE never mail
  anyone; its only scheduling is iTIP a client POSTs to the outbox, sent by the iMIP
  handler. That handler is on here, as Nextcloud's scheduling is, and writes what it would
  mail into ``imip/`` (``SabreDav.captured``): there is no sendmail on these machines.
- It accepts an orphan override (a RECURRENCE-ID without its master) and a TZID without
  its VTIMEZONE; it refuses a VEVENT without UID (400) and what is not iCalendar (415).
- It catches only its own exceptions: any other (vobject's on an RRULE it cannot read, PHP's
  on a deprecation turned into an error) ends the request with an empty 500, which the sink
  reports as a server error for that item.
- It reads a whole object into memory and takes time in proportion to its size: a PUT of
  32 MiB took about 3 s here, a GET 1 s. It sets no size limit of its own.
- The built-in server answers one request at a time and closes each connection.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from hashlib import md5
from pathlib import Path

from tests.servers import HttpServer, free_port, tail

REALM = "SabreDAV"
DAV_ROOT = "/remote.php/dav/"
SABRE_AUTOLOAD = Path("/usr/share/php/Sabre/autoload.php")
"""Where Debian's ``php-sabre-dav`` puts the library (tests/run.sh installs it)."""

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY ASC, username TEXT UNIQUE, digesta1 TEXT);
CREATE TABLE principals (id INTEGER PRIMARY KEY ASC, uri TEXT UNIQUE, email TEXT,
    displayname TEXT, vcardurl TEXT);
CREATE TABLE groupmembers (id INTEGER PRIMARY KEY ASC, principal_id INTEGER,
    member_id INTEGER, UNIQUE(principal_id, member_id));
CREATE TABLE calendars (id INTEGER PRIMARY KEY ASC, principaluri TEXT, displayname TEXT,
    uri TEXT, ctag INTEGER, description TEXT, calendarorder INTEGER, calendarcolor TEXT,
    timezone TEXT, components TEXT, transparent BOOL);
CREATE TABLE calendarobjects (id INTEGER PRIMARY KEY ASC, calendardata BLOB, uri TEXT,
    calendarid INTEGER, lastmodified INTEGER, etag TEXT, size INTEGER, componenttype TEXT,
    firstoccurence INTEGER, lastoccurence INTEGER);
CREATE TABLE addressbooks (id INTEGER PRIMARY KEY ASC, principaluri TEXT, displayname TEXT,
    uri TEXT, description TEXT, ctag INTEGER);
CREATE TABLE cards (id INTEGER PRIMARY KEY ASC, addressbookid INTEGER, carddata BLOB,
    uri TEXT, lastmodified INTEGER);
"""
"""SabreDAV 1.8's SQLite schema, as the package's examples give it: written here because
images that leave out /usr/share/doc leave the examples out too."""

SERVER_PHP = r"""<?php
// A private SabreDAV for tests: see tests/sabredav.py.
date_default_timezone_set('UTC');
error_reporting(E_ALL & ~E_DEPRECATED);
set_error_handler(function ($number, $message, $file, $line) {
    if (!(error_reporting() & $number)) {
        return false;
    }
    throw new ErrorException($message, 0, $number, $file, $line);
});

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if (preg_match('#^/\.well-known/(caldav|carddav)/?$#', $path)) {
    header('Location: @DAV_ROOT@', true, 301);
    return true;
}
if (strpos($path, '@DAV_ROOT@') !== 0 && $path . '/' !== '@DAV_ROOT@') {
    http_response_code(404);
    return true;
}

require_once '@AUTOLOAD@';

class UsersTableBasicAuth extends \Sabre\DAV\Auth\Backend\AbstractBasic {
    public function __construct(private \PDO $pdo) {}

    protected function validateUserPass($username, $password) {
        $query = $this->pdo->prepare('SELECT digesta1 FROM users WHERE username = ?');
        $query->execute([$username]);
        $digest = $query->fetchColumn();
        return is_string($digest)
            && hash_equals($digest, md5($username . ':@REALM@:' . $password));
    }
}

class CapturedIMip extends \Sabre\CalDAV\Schedule\IMip {
    protected function mail($to, $subject, $body, array $headers) {
        $folder = __DIR__ . '/imip';
        file_put_contents(tempnam($folder, 'imip-'),
            'To: ' . $to . "\r\nSubject: " . $subject . "\r\n"
            . implode("\r\n", $headers) . "\r\n\r\n" . $body);
    }
}

$pdo = new \PDO('sqlite:' . __DIR__ . '/sabredav.sqlite');
$pdo->setAttribute(\PDO::ATTR_ERRMODE, \PDO::ERRMODE_EXCEPTION);
$pdo->setAttribute(\PDO::ATTR_TIMEOUT, 30);

// Files, as Nextcloud lays them out: each account's own folder under files/<login>/, a
// file system tree (FSExt: ETags from each file's MD5), the only child shown.
if (strpos($path, '@DAV_ROOT@files') === 0) {
    $login = '';
    if (preg_match('#^Basic\s+(.+)$#i', $_SERVER['HTTP_AUTHORIZATION'] ?? '', $basic)) {
        $login = explode(':', (string) base64_decode($basic[1]), 2)[0];
    }
    $spaces = [];
    if (preg_match('/^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$/', $login)
            && is_dir(__DIR__ . '/files/' . $login)) {
        $spaces[] = new \Sabre\DAV\FSExt\Directory(__DIR__ . '/files/' . $login);
    }
    $server = new \Sabre\DAV\Server(new \Sabre\DAV\SimpleCollection('root', [
        new \Sabre\DAV\SimpleCollection('files', $spaces)]));
    $server->setBaseUri('@DAV_ROOT@');
    $server->addPlugin(new \Sabre\DAV\Auth\Plugin(new UsersTableBasicAuth($pdo), '@REALM@'));
    $server->exec();
    return true;
}

$principals = new \Sabre\DAVACL\PrincipalBackend\PDO($pdo);
$server = new \Sabre\DAV\Server([
    new \Sabre\CalDAV\Principal\Collection($principals),
    new \Sabre\CalDAV\CalendarRootNode($principals, new \Sabre\CalDAV\Backend\PDO($pdo)),
    new \Sabre\CardDAV\AddressBookRoot($principals, new \Sabre\CardDAV\Backend\PDO($pdo)),
]);
$server->setBaseUri('@DAV_ROOT@');
$server->addPlugin(new \Sabre\DAV\Auth\Plugin(new UsersTableBasicAuth($pdo), '@REALM@'));
$caldav = new \Sabre\CalDAV\Plugin();
$caldav->setIMipHandler(new CapturedIMip('agenda@ville-exemple.fr'));
$server->addPlugin($caldav);
$server->addPlugin(new \Sabre\CardDAV\Plugin());
$server->addPlugin(new \Sabre\DAVACL\Plugin());
$server->exec();
"""


class SabreDavMissing(RuntimeError):
    """PHP or Debian's SabreDAV is not installed (tests/run.sh installs them)."""


@dataclass
class SabreDav(HttpServer):
    @property
    def database(self) -> Path:
        return self.root / "sabredav.sqlite"

    @property
    def log(self) -> str:
        return tail(self.root / "php.log", 40)

    def space(self, login: str) -> Path:
        """The folder holding ``login``'s files (``/remote.php/dav/files/<login>/``)."""
        return self.root / "files" / login

    def space_url(self) -> str:
        """A WebDAV target's ``url`` for these files, as for a Nextcloud."""
        return f"{self.base_url}{DAV_ROOT}files/{{login}}/"

    def calendar_home(self, login: str) -> str:
        return f"{DAV_ROOT}calendars/{login}/"

    def addressbook_home(self, login: str) -> str:
        return f"{DAV_ROOT}addressbooks/{login}/"

    def add_user(self, login: str, password: str) -> None:
        """A new account with its principal, its calendar ``personal`` and its address book
        ``contacts``; PHP opens the database again on each request."""
        self.users[login] = password
        _add_users(self.database, {login: password})

    def captured(self) -> list[str]:
        """Every iMIP message the server would have mailed, oldest first."""
        return [path.read_text() for path in sorted((self.root / "imip").iterdir(),
                                                    key=lambda path: path.stat().st_mtime_ns)]


def start_sabredav(base: Path, users: dict[str, str]) -> SabreDav:
    """Start a SabreDAV whose files all live in ``base`` (created if missing), for ``users``
    (login: password). Raises SabreDavMissing when PHP or SabreDAV is not installed, and
    RuntimeError with the log's end when it does not start."""
    php = shutil.which("php")
    if php is None or not SABRE_AUTOLOAD.exists():
        raise SabreDavMissing("PHP or Debian's php-sabre-dav is missing: run tests/run.sh, "
                              "which installs php-cli, php-sqlite3 and php-sabre-dav")
    root = Path(base)
    root.mkdir(parents=True, exist_ok=True)
    (root / "imip").mkdir(exist_ok=True)
    (root / "server.php").write_text(
        SERVER_PHP.replace("@DAV_ROOT@", DAV_ROOT).replace("@REALM@", REALM)
        .replace("@AUTOLOAD@", str(SABRE_AUTOLOAD)))
    with sqlite3.connect(root / "sabredav.sqlite") as database:
        database.executescript(SCHEMA)
    database.close()
    _add_users(root / "sabredav.sqlite", users)
    for _ in range(5):
        port = free_port()
        with open(root / "php.log", "ab") as log:
            process = subprocess.Popen(
                [php, "-S", f"127.0.0.1:{port}", str(root / "server.php")],
                cwd=root, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        server = SabreDav("127.0.0.1", port, root, dict(users), process)
        if server.listening():
            return server
        server.stop()
    raise RuntimeError(f"sabredav did not start: {tail(root / 'php.log')}")


def _add_users(database: Path, users: dict[str, str]) -> None:
    with sqlite3.connect(database) as connection:
        for login, password in users.items():
            principal = f"principals/{login}"
            (database.parent / "files" / login).mkdir(parents=True, exist_ok=True)
            digest = md5(f"{login}:{REALM}:{password}".encode()).hexdigest()
            connection.execute("INSERT OR REPLACE INTO users (username, digesta1) VALUES (?, ?)",
                               (login, digest))
            if connection.execute("SELECT 1 FROM principals WHERE uri = ?",
                                  (principal,)).fetchone():
                continue
            connection.execute("INSERT INTO principals (uri, email, displayname) "
                               "VALUES (?, ?, ?)", (principal, login, login))
            connection.execute(
                "INSERT INTO calendars (principaluri, displayname, uri, ctag, components) "
                "VALUES (?, 'Personal', 'personal', 1, 'VEVENT,VTODO')", (principal,))
            connection.execute(
                "INSERT INTO addressbooks (principaluri, displayname, uri, ctag) "
                "VALUES (?, 'Contacts', 'contacts', 1)", (principal,))
    connection.close()
