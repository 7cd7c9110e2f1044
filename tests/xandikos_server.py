"""Run Xandikos (PyPI) for tests: several users behind HTTP Basic on plain HTTP, and every
scheduling mail (iMIP) handed to a capture program instead of sending it.

Xandikos's own multi-user command takes an htpasswd file only with TLS; on loopback, for
tests, this launcher builds the same application around the same authentication middleware
without it. Run from the project's folder as ``python -m tests.xandikos_server DIRECTORY
PORT HTPASSWD SENDMAIL`` (as a script, ``tests/`` would come first in the path and its
``xandikos.py`` would hide the package).
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web
from xandikos.htpasswd import HtpasswdFile
from xandikos.imip_transport import SendmailTransport
from xandikos.multi_user import MultiUserFilesystemBackend, MultiUserXandikosApp
from xandikos.web import WELLKNOWN_DAV_PATHS, RedirectDavHandler, basic_auth_middleware

SENDER = "calendrier@xandikos.test"
"""Who the iMIP mail Xandikos sends is from: it sends none without one."""


async def serve(directory: str, port: int, htpasswd: str, sendmail: str) -> None:
    backend = MultiUserFilesystemBackend(
        directory, imip_transport=SendmailTransport(sendmail), imip_from=SENDER)
    dav = MultiUserXandikosApp(backend, current_user_principal="/%(REMOTE_USER)s/")

    async def handler(request: web.Request) -> web.StreamResponse:
        return await dav.aiohttp_handler(request, "/")

    app = web.Application(middlewares=[basic_auth_middleware(HtpasswdFile(htpasswd))])
    for path in WELLKNOWN_DAV_PATHS:
        app.router.add_route("*", path, RedirectDavHandler("/").__call__)
    app.router.add_route("*", "/{path_info:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    directory, port, htpasswd, sendmail = sys.argv[1:5]
    asyncio.run(serve(directory, int(port), htpasswd, sendmail))
