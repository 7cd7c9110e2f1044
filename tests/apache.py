"""Start and stop a private Apache 2.4 with ``mod_dav_fs`` (Debian ``apache2``) for tests, on
127.0.0.1.

Each instance runs ``apache2 -f CONFIG -DFOREGROUND`` with every path under its folder: one
space per user, ``/dav/<login>/``, the folder ``spaces/<login>``, readable and writable by
that user alone (Basic auth, bcrypt passwords made with ``htpasswd -B``). Apache keeps files
as they are given, in those folders: a test reads them there, without WebDAV.

Facts learned here (Debian 12, Apache 2.4, checked 2026-12-07): as root, its children run as
the configured ``User`` (``nobody`` here), so the spaces belong to that user and the folders
above them get the search bit (pytest's are private to root); it needs its own ``PidFile``,
``DavLockDB`` and ``Mutex`` folder under the test's; ``mod_unixd`` is built in. Since 2.4.54
it refuses a request body over 1 GiB (``LimitRequestBody``'s default): a file store for
drives raises it, as this one does (``0``, no limit).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.servers import HttpServer, free_port, let_mail_user_traverse, tail

MODULES = Path("/usr/lib/apache2/modules")
LOADED = ("mpm_event", "authz_core", "authz_user", "authn_core", "authn_file", "auth_basic",
          "dav", "dav_fs", "alias", "dir", "mime", "setenvif")


class ApacheMissing(RuntimeError):
    """Debian's apache2 is not installed (tests/run.sh installs it)."""


@dataclass
class Apache(HttpServer):
    def space(self, login: str) -> Path:
        """The folder holding what ``login`` writes to its space."""
        return self.root / "spaces" / login

    def space_url(self) -> str:
        """The batch's ``url`` for this server: each user's space."""
        return f"{self.base_url}/dav/{{login}}/"

    @property
    def log(self) -> str:
        return tail(self.root / "error.log", 40)


def start_apache(base: Path, users: dict[str, str]) -> Apache:
    """Start an Apache whose files all live in ``base`` (created if missing), one space per
    user of ``users`` (login: password). Raises ``ApacheMissing`` without Debian's apache2,
    RuntimeError with the log's end when it does not start."""
    program = shutil.which("apache2") or "/usr/sbin/apache2"
    if not Path(program).exists() or not (MODULES / "mod_dav_fs.so").exists():
        raise ApacheMissing("apache2 with mod_dav_fs is not installed")
    root = Path(base)
    for folder in ("spaces", "lock", "run"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    runs_as = "nobody" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    for login in users:
        (root / "spaces" / login).mkdir(exist_ok=True)
    _write_users(root, users)
    if os.getuid() == 0:
        let_mail_user_traverse(root / "spaces", runs_as)
        nobody = pwd.getpwnam(runs_as)
        for path in (root / "spaces", root / "lock", *(root / "spaces").iterdir()):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    for _ in range(5):
        port = free_port()
        (root / "apache.conf").write_text(_config(root, port, users, runs_as), encoding="utf-8")
        with open(root / "error.log", "ab") as log:
            process = subprocess.Popen(
                [program, "-f", str(root / "apache.conf"), "-DFOREGROUND"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"})
        server = Apache("127.0.0.1", port, root, dict(users), process)
        if server.listening():
            return server
        server.stop()
    raise RuntimeError(f"apache2 did not start: {tail(root / 'error.log')}")


def _write_users(root: Path, users: dict[str, str]) -> None:
    path = root / "users"
    path.unlink(missing_ok=True)
    for login, password in users.items():
        subprocess.run(["htpasswd", "-B", "-b", "-C", "4", *(["-c"] if not path.exists() else []),
                        str(path), login, password], check=True, capture_output=True)


def _config(root: Path, port: int, users: dict[str, str], runs_as: str) -> str:
    loaded = "\n".join(f"LoadModule {name}_module {MODULES}/mod_{name}.so" for name in LOADED)
    spaces = "\n".join(f"""
<Directory "{root / 'spaces' / login}">
    Dav On
    AuthType Basic
    AuthName "bascule"
    AuthUserFile "{root / 'users'}"
    Require user {login}
</Directory>""" for login in users)
    return f"""\
ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{root / 'run' / 'apache.pid'}"
Mutex file:{root / 'run'} default
ErrorLog "{root / 'error.log'}"
LogLevel warn
User {runs_as}
Group {"nogroup" if runs_as == "nobody" else runs_as}
{loaded}
TypesConfig /etc/mime.types
DavLockDB "{root / 'lock' / 'davlock'}"
LimitRequestBody 0
Alias /dav/ "{root / 'spaces'}/"
<Directory "{root / 'spaces'}">
    Options None
    AllowOverride None
    Require all denied
</Directory>
{spaces}
"""
