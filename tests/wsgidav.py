"""Start and stop a private WsgiDAV (a WebDAV file server, from PyPI, on cheroot) for tests,
on 127.0.0.1.

Each instance runs in a process of its own (the interpreter running the tests, a launcher
script written into its folder) serving one share per user, ``/<login>/``, the folder
``spaces/<login>`` of its root, each readable and writable by its user alone with Basic
auth. WsgiDAV keeps files as they are given, named as they are named, in those folders: a
test reads them there, without WebDAV. It speaks TLS when given certificates
(``tests.tls``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.servers import HttpServer, free_port, tail
from tests.tls import TestCertificates

LAUNCHER = """\
import json, logging, os, sys
from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp

config = json.load(open(sys.argv[1], encoding="utf-8"))
logging.basicConfig(level=logging.WARNING)
app = WsgiDAVApp(config)
quotas = config.get("quotas", {})


def used(folder):
    return sum(os.path.getsize(os.path.join(top, name))
               for top, _, names in os.walk(folder) for name in names)


def with_quotas(environ, start_response):
    login = environ.get("PATH_INFO", "").lstrip("/").split("/", 1)[0]
    if environ["REQUEST_METHOD"] == "PUT" and login in quotas:
        coming = int(environ.get("CONTENT_LENGTH") or 0)
        if used(config["provider_mapping"]["/" + login]) + coming > quotas[login]:
            start_response("507 Insufficient Storage", [("Content-Length", "0")])
            return [b""]
    return app(environ, start_response)


server = wsgi.Server((config["host"], config["port"]), with_quotas)
if config.get("tls"):
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    server.ssl_adapter = BuiltinSSLAdapter(*config["tls"])
try:
    server.start()
except KeyboardInterrupt:
    server.stop()
"""


@dataclass
class WsgiDav(HttpServer):
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def space(self, login: str) -> Path:
        """The folder holding what ``login`` writes to its share."""
        return self.root / "spaces" / login

    def space_url(self) -> str:
        """The batch's ``url`` for this server: each user's share."""
        return f"{self.base_url}/{{login}}/"

    @property
    def log(self) -> str:
        return tail(self.root / "wsgidav.log", 40)


def start_wsgidav(base: Path, users: dict[str, str], quotas: dict[str, int] | None = None,
                  settable_mtime: bool = False,
                  certificates: TestCertificates | None = None) -> WsgiDav:
    """Start a WsgiDAV whose files all live in ``base`` (created if missing), one share per
    user of ``users`` (login: password). ``quotas`` (login: bytes) puts a quota on a share,
    as Nextcloud's: a PUT that would take it beyond is answered 507 Insufficient Storage
    (WsgiDAV has no quotas of its own: a layer in front of it, in its process, answers).
    ``settable_mtime`` lets a client set a file's modification time with a PROPPATCH of
    ``getlastmodified`` (WsgiDAV refuses it, 403, unless configured so). ``certificates``:
    it speaks TLS (``https``) with the server's certificate of those. Raises RuntimeError
    with the log's end when it does not start."""
    root = Path(base)
    (root / "spaces").mkdir(parents=True, exist_ok=True)
    for login in users:
        (root / "spaces" / login).mkdir(exist_ok=True)
    (root / "launcher.py").write_text(LAUNCHER, encoding="utf-8")
    for _ in range(5):
        port = free_port()
        (root / "config.json").write_text(
            json.dumps(_config(root, port, users) | {"quotas": quotas or {}} | (
                {"tls": [str(certificates.cert_file), str(certificates.key_file)]}
                if certificates else {}) | (
                {"mutable_live_props": ["{DAV:}getlastmodified"],
                 "hotfixes": {"emulate_win32_lastmod": True}} if settable_mtime else {})),
            encoding="utf-8")
        with open(root / "wsgidav.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(root / "launcher.py"), str(root / "config.json")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        server = WsgiDav("127.0.0.1", port, root, dict(users), process,
                         "https" if certificates else "http")
        if server.listening():
            return server
        server.stop()
    raise RuntimeError(f"wsgidav did not start: {tail(root / 'wsgidav.log')}")


def _config(root: Path, port: int, users: dict[str, str]) -> dict:
    return {
        "host": "127.0.0.1",
        "port": port,
        "provider_mapping": {f"/{login}": str(root / "spaces" / login) for login in users},
        "http_authenticator": {"domain_controller": None, "accept_basic": True,
                               "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {
            f"/{login}": {login: {"password": password, "roles": []}}
            for login, password in users.items()}},
        "lock_storage": True,
        "property_manager": True,
        "verbose": 1,
        "logging": {"enable": False},
    }
