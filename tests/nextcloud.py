"""A test server that follows Nextcloud's published WebDAV documentation, on 127.0.0.1, for
the ``nextcloud`` profile: Nextcloud itself (a PHP application with its database) cannot
run here, so, as ``tests/graph_server.py`` does for Microsoft Graph, this server does what
the documentation says, and says where each fact comes from. WsgiDAV (``tests/wsgidav.py``)
serves the files; a WSGI layer in front of it, in the same process, answers what is
Nextcloud's own.

Facts, and their sources ("developer manual": docs.nextcloud.com/server/latest/
developer_manual/client_apis/WebDAV/; "admin manual": .../admin_manual/):

- Files live under ``/remote.php/dav/files/<user>/``, uploads under
  ``/remote.php/dav/uploads/<user>/``; every request carries Basic auth (developer manual,
  "Basic APIs", "WebDAV basics"; "Chunked file upload").
- A ``PUT`` writes the whole file and overwrites one there (Basic APIs, "Uploading files").
  It is written to a part file first, in the same storage as its target (admin manual,
  "Configuration Parameters", ``part_file_in_storage``): a PUT cut short leaves no file at
  the name. The part file it leaves is seen on the server's disk only, never over WebDAV
  (nextcloud/server issue 26179, "Failed upload .part-files remain on file system"); here
  part files live in ``parts/`` beside the spaces, out of WsgiDAV's sight.
- A PUT larger than the cap is refused with 413 before its body is read. "The default
  maximum file size for uploads is 512MB" (admin manual, "Uploading big files > 512MB");
  the limit is the web server's in front of PHP (same page: nginx ``client_max_body_size``,
  Apache ``LimitRequestBody``), which both answer 413 Request Entity Too Large. ``put_cap``
  sets it (tests make it small).
- ``X-OC-Mtime`` (a Unix time in seconds) on a PUT, or on the MOVE that assembles chunks,
  sets the file's modification time, and the answer carries ``X-OC-MTime: accepted``
  (Basic APIs, "Special Headers"; "Chunked file upload", "Setting the modification time").
  A value that is not a number is refused, 400 (the manual says nothing of it; the message
  is the one of Nextcloud's ``ChunkingV2Plugin``).
- ``OC-Checksum`` (``SHA256:<hex>``...) is stored, not checked, and read back as the
  ``oc:checksums`` property (``{http://owncloud.org/ns}checksums``) (Basic APIs, "Special
  Headers" and "Supported properties"). The manual does not say what a write without the
  header does to a stored checksum; this server clears it (a checksum of other bytes would
  be wrong), as Nextcloud's ``File::put`` does. It is kept as a WsgiDAV dead property,
  which a client could also PROPPATCH: Nextcloud's cannot be set that way.
- Answers to a creation or a move carry ``OC-ETag`` and ``OC-FileId``
  (``<padded-id><instance-id>``) (Basic APIs, "Response Headers"), and ``ETag``.
- ``MOVE`` takes ``Overwrite: T`` or ``F`` (Basic APIs, "Moving files and folders"); an
  ``If`` header naming the destination's ETag is RFC 4918's (10.4), which SabreDAV, the
  DAV layer of Nextcloud, implements; a PUT takes ``If-None-Match: *`` and ``If-Match``
  (RFC 9110 13.1). Each refused precondition answers 412.
- Chunked upload v2 ("Chunked file upload"): ``MKCOL uploads/<user>/<id>`` with a
  ``Destination`` header (the file's URL under ``files/<user>/``) makes the upload folder;
  ``PUT <id>/<n>`` sends a chunk, ``n`` a number from 1 to 10000, with ``Destination`` and
  ``OC-Total-Length``; the chunks are assembled "in the order of their names" by ``MOVE
  <id>/.file`` with ``Destination`` (and ``OC-Total-Length``, ``X-OC-Mtime``); "the chunks
  and the temporary upload folder will be deleted afterwards"; ``DELETE <id>/`` aborts;
  "chunks cannot be downloaded from the upload directory" (GET: 405). Every chunk but the
  last must be 5 MB to 5 GB: this server refuses the assembly (400) otherwise, counting 5
  MB as 5 MiB, S3's smallest multipart part, which is what the rule is for ("to support
  uploads directly to ... storages like S3"); ``min_chunk`` lowers it.
  Without ``Destination`` the server falls back to version 1 (its source,
  ``ChunkingV2Plugin``); this one speaks version 2 only and answers 400.
- ``OC-Total-Length`` on a chunk whose upload would not fit in the user's quota: 507
  Insufficient Storage ("Uploading chunks"); on the MOVE, a total that is not the sum of
  the chunks: 400 Bad Request ("In case of mismatch, the server will return 400 Bad
  Request", owncloud-archive/documentation issue 2864, on the same protocol).
- The assembling MOVE answers 201 for a new file, 204 for one replaced (Nextcloud's
  ``ChunkingV2Plugin``; the manual gives no status), and is refused 409 where the
  destination's folder does not exist (RFC 4918 9.9.4).
- Names: "The '/' and '\\' characters are always forbidden, as well as all characters in
  the ASCII range [0-31]"; ``forbidden_filenames`` defaults to ``.htaccess`` and
  ``forbidden_filename_extensions`` to ``.filepart`` and ``.part`` ("The '.part' extension
  is always forbidden, as this is used internally by Nextcloud") (admin manual,
  "Configuration Parameters"); a name is at most 250 characters (Nextcloud's
  ``FilenameValidator``, the length of its file cache's ``name`` column). A PUT, MKCOL or
  MOVE making such a name, or an upload folder's MKCOL naming it as its ``Destination``, is
  refused 400 Bad Request (Nextcloud's ``InvalidPath``
  exception; the manual gives no status). With ``windows_names`` (admin manual, "Windows
  compatible filenames", Nextcloud 31) Windows's characters, base names and trailing dot
  and space are refused too.
- The OCS Share API (developer manual, "OCS Share API", client_apis/OCS/ocs-share-api):
  ``/ocs/v2.php/apps/files_sharing/api/v1/shares``, Basic auth as for WebDAV ("OCS APIs
  overview"), and "all calls to OCS endpoints require the ``OCS-APIRequest`` header to be
  set to ``true``": without it Nextcloud answers 412 ``{"message":"CSRF check failed"}``
  (nextcloud/server issue 2753; its ``CrossSiteRequestForgeryException``). ``GET`` lists
  the user's shares, of one file or folder with ``path`` (404 "file doesn't exist");
  ``GET shares/<id>`` gives one (404 if none); ``POST`` with form fields ``path`` (relative
  to the user's files), ``shareType`` (0 user, 1 group, 3 public link, 4 email, 6
  federated; another: 400 "unknown share type"), ``shareWith`` (required for 0 and 1),
  ``permissions`` (1 read, 2 update, 4 create, 8 delete, 16 share; default 31, for public
  links 1), ``publicUpload``, ``password``, ``expireDate`` (``YYYY-MM-DD``), ``note``;
  "404 - file couldn't be shared". The answer is the OCS envelope, ``ocs.meta``
  (``status``, ``statuscode``, ``message``) and ``ocs.data``, in XML, or in JSON with
  ``format=json`` or ``Accept: application/json`` ("OCS APIs overview"); on v2 the HTTP
  status is the OCS one and success is 200 (v1 says 100) (API reference,
  ``OC\\AppFramework\\OCS\\V2Response``: "the V2 endpoint just passes on status codes").
  What the manual leaves out is Nextcloud's ``ShareAPIController`` and share manager: an
  unknown user or group 404 ("Please specify a valid user"/"group"), a date not
  ``YYYY-MM-DD`` 404 ("Invalid date, date format must be YYYY-MM-DD"), a date in the past
  404 ("Expiration date is in the past"); 403 for a share without read permission, a file
  shared with create or delete permission ("Files cannot be shared with create
  permissions"), a share with oneself, a user or group already shared with on the item
  ("already shared"), and a federated share where federation is not set up. A share's
  fields are those of ``ShareAPIController::formatShare`` (``id``, ``share_type``,
  ``uid_owner``, ``permissions``, ``path`` from the user's files with a leading ``/``,
  ``item_type``, ``share_with``, ``expiration`` as ``YYYY-MM-DD 00:00:00``, ``token`` and
  ``url`` for a link, ``note``); a password is never given back. Shares live in the
  server's memory; they do not follow a file moved or deleted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.servers import HttpServer, free_port, tail

MIB = 1 << 20
PUT_CAP = 512 * 1000 * 1000
MIN_CHUNK = 5 * MIB
MAX_CHUNKS = 10_000
SHARES = "/ocs/v2.php/apps/files_sharing/api/v1/shares"

LAUNCHER = r'''
import base64, datetime, hashlib, json, logging, os, re, secrets, sys, threading, uuid
from io import BytesIO
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from cheroot import wsgi
from wsgidav.util import get_file_etag
from wsgidav.wsgidav_app import WsgiDAVApp

config = json.load(open(sys.argv[1], encoding="utf-8"))
logging.basicConfig(level=logging.WARNING)
dav = WsgiDAVApp(config["wsgidav"])
ROOT = config["root"]
USERS = config["users"]
QUOTAS = config["quotas"]
PUT_CAP = config["put_cap"]
MIN_CHUNK = config["min_chunk"]
MAX_CHUNKS = config["max_chunks"]
GROUPS = config["groups"]
FILES = "/remote.php/dav/files/"
SHARES = "/ocs/v2.php/apps/files_sharing/api/v1/shares"
UPLOADS = "/remote.php/dav/uploads/"
OC = "http://owncloud.org/ns"
BLOCK = 1 << 16
lock = threading.Lock()
file_ids = {}
uploads = {}
"""Each upload folder's destination, as Nextcloud keeps it in its cache: (user, id): path."""
shares = []
"""Every share made, in the order made, as formatShare gives it, plus its password."""


WINDOWS_CHARACTERS = '<>:"|?*'
WINDOWS_BASENAMES = {"con", "prn", "aux", "nul"} | {
    device + n for device in ("com", "lpt") for n in "0123456789\u00b9\u00b2\u00b3"}


class Answer(Exception):
    def __init__(self, status, headers=(), body=b""):
        self.status, self.headers, self.body = status, list(headers), body


def space(user):
    return os.path.join(ROOT, "spaces", user)


def used(user):
    return sum(os.path.getsize(os.path.join(top, name))
               for top, _, names in os.walk(space(user)) for name in names)


def login_of(environ):
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header.startswith("Basic "):
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        if USERS.get(user) == password:
            return user
    return None


def file_path(user, path):
    """The disk path of a path under files/<user>/, or None outside it."""
    prefix = FILES + user + "/"
    if not path.startswith(prefix):
        return None
    inside = path[len(prefix):]
    if ".." in inside.split("/") or "\0" in inside:
        return None
    return os.path.join(space(user), *[p for p in inside.split("/") if p])


def check_name(path):
    """400 for a name Nextcloud's file name validation refuses (see the module's facts)."""
    name = path.rstrip("/").rpartition("/")[2]
    windows = config["windows_names"]
    refused = "\\" + (WINDOWS_CHARACTERS if windows else "")
    endings = (".part", ".filepart") + ((" ", ".") if windows else ())
    if (any(c in refused or ord(c) < 32 for c in name) or name.lower() == ".htaccess"
            or name.lower().endswith(endings) or len(name) > 250
            or (windows and name.partition(".")[0].lower() in WINDOWS_BASENAMES)):
        raise Answer("400 Bad Request", body=("Invalid path: " + name).encode())


def destination(environ, user):
    value = environ.get("HTTP_DESTINATION")
    if not value:
        raise Answer("400 Bad Request", body=b"Destination header required")
    path = unquote(urlsplit(value).path)
    disk = file_path(user, path)
    if disk is None or path.endswith("/"):
        raise Answer("400 Bad Request", body=b"Destination outside the user's files")
    check_name(path)
    return path, disk


def etag(disk):
    return '"' + get_file_etag(disk) + '"'


def file_id(path):
    with lock:
        return file_ids.setdefault(path, "%08docnctest" % (len(file_ids) + 1))


def mtime(environ):
    value = environ.get("HTTP_X_OC_MTIME")
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        raise Answer("400 Bad Request",
                     body=b"X-OC-MTime header must be an integer (unix timestamp).")


def check_conditions(environ, disk, path, overwrite_header):
    """412 where a condition fails: If-None-Match: *, If-Match, Overwrite: F, and an If
    header's ETag (tagged to this path, or untagged)."""
    exists = os.path.isfile(disk)
    current = etag(disk) if exists else None
    if environ.get("HTTP_IF_NONE_MATCH", "").strip() == "*" and exists:
        raise Answer("412 Precondition Failed")
    match = environ.get("HTTP_IF_MATCH")
    if match and (not exists or (match.strip() != "*" and current.strip('"') not in
                                 [t.strip().removeprefix("W/").strip('"')
                                  for t in match.split(",")])):
        raise Answer("412 Precondition Failed")
    if overwrite_header and environ.get("HTTP_OVERWRITE", "T").upper() == "F" and exists:
        raise Answer("412 Precondition Failed")
    condition = environ.get("HTTP_IF")
    if condition:
        tagged = re.match(r"\s*<([^>]*)>", condition)
        if tagged and unquote(urlsplit(tagged.group(1)).path) != path:
            return
        wanted = re.findall(r"\[([^\]]*)\]", condition)
        if wanted and (not exists or all(
                w.strip().removeprefix("W/").strip('"') != current.strip('"')
                for w in wanted)):
            raise Answer("412 Precondition Failed")


def check_quota(user, coming, replacing=0):
    if user in QUOTAS and used(user) - replacing + coming > QUOTAS[user]:
        raise Answer("507 Insufficient Storage")


def part_file(user):
    folder = os.path.join(ROOT, "parts", user)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, ".ocTransferId%s.part" % uuid.uuid4().hex)


def set_checksum(environ, path, user):
    """Store OC-Checksum as the oc:checksums property, or clear it, through WsgiDAV's own
    PROPPATCH (its dead properties follow MOVE and DELETE)."""
    value = environ.get("HTTP_OC_CHECKSUM", "").strip()
    action = ("<d:set><d:prop><oc:checksums><oc:checksum>%s</oc:checksum></oc:checksums>"
              "</d:prop></d:set>" % escape(value)) if value else \
        "<d:remove><d:prop><oc:checksums/></d:prop></d:remove>"
    body = ('<?xml version="1.0" encoding="utf-8"?><d:propertyupdate xmlns:d="DAV:" '
            'xmlns:oc="%s">%s</d:propertyupdate>' % (OC, action)).encode()
    inner = {k: v for k, v in environ.items() if not k.startswith("HTTP_")}
    inner.update({"REQUEST_METHOD": "PROPPATCH", "PATH_INFO": path.encode("utf-8").decode("latin-1"),
                  "SCRIPT_NAME": "", "QUERY_STRING": "", "CONTENT_TYPE": "application/xml",
                  "CONTENT_LENGTH": str(len(body)), "wsgi.input": BytesIO(body),
                  "HTTP_AUTHORIZATION": environ["HTTP_AUTHORIZATION"],
                  "HTTP_HOST": environ.get("HTTP_HOST", "127.0.0.1")})
    status = []
    for _ in dav(inner, lambda s, h, e=None: status.append(s)):
        pass
    if not status or not status[0].startswith("207"):
        raise Answer("500 Internal Server Error", body=b"checksum not stored")


def written(environ, user, path, disk, existed, when):
    """What a file's creation answers, once it is in place: its mtime and checksum kept."""
    if when is not None:
        os.utime(disk, (when, when))
    headers = [("ETag", etag(disk)), ("OC-ETag", etag(disk)), ("OC-FileId", file_id(path))]
    if when is not None:
        headers.append(("X-OC-MTime", "accepted"))
    set_checksum(environ, path, user)
    raise Answer("204 No Content" if existed else "201 Created", headers)


def read_body(environ, target):
    """The request's body into ``target``; False if it ends before its Content-Length."""
    length = environ.get("CONTENT_LENGTH")
    left = int(length) if length else None
    stream = environ["wsgi.input"]
    with open(target, "wb") as out:
        while left is None or left > 0:
            block = stream.read(BLOCK if left is None else min(BLOCK, left))
            if not block:
                break
            out.write(block)
            if left is not None:
                left -= len(block)
    return not left


def put_file(environ, user, path):
    disk = file_path(user, path)
    if disk is None or path.endswith("/"):
        raise Answer("403 Forbidden")
    check_name(path)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > PUT_CAP:
        raise Answer("413 Request Entity Too Large", [("Connection", "close")])
    if not os.path.isdir(os.path.dirname(disk)):
        raise Answer("409 Conflict")
    if os.path.isdir(disk):
        raise Answer("405 Method Not Allowed")
    check_conditions(environ, disk, path, overwrite_header=False)
    when = mtime(environ)
    existed = os.path.isfile(disk)
    check_quota(user, length, os.path.getsize(disk) if existed else 0)
    part = part_file(user)
    if not read_body(environ, part):
        raise Answer("400 Bad Request", body=b"Expected filesize does not match")
    os.replace(part, disk)
    written(environ, user, path, disk, existed, when)


def upload_folder(user, upload):
    return os.path.join(ROOT, "uploads", user, upload)


def uploads_request(environ, user, rest):
    method = environ["REQUEST_METHOD"]
    parts = [p for p in rest.split("/") if p]
    if not parts:
        raise Answer("405 Method Not Allowed")
    upload, member = parts[0], "/".join(parts[1:])
    folder = upload_folder(user, upload)
    if method == "MKCOL" and not member:
        if os.path.exists(folder):
            raise Answer("405 Method Not Allowed")
        target, _ = destination(environ, user)
        os.makedirs(folder)
        with lock:
            uploads[(user, upload)] = target
        raise Answer("201 Created")
    if method == "DELETE" and not member:
        if not os.path.isdir(folder):
            raise Answer("404 Not Found")
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
        with lock:
            uploads.pop((user, upload), None)
        raise Answer("204 No Content")
    if not os.path.isdir(folder):
        raise Answer("404 Not Found")
    if method == "PUT" and member and "/" not in member:
        destination(environ, user)
        if not member.isdigit() or not 1 <= int(member) <= MAX_CHUNKS:
            raise Answer("400 Bad Request",
                         body=b"Invalid chunk name, must be numeric between 1 and 10000")
        total = environ.get("HTTP_OC_TOTAL_LENGTH")
        if total is not None:
            check_quota(user, int(total))
        part = part_file(user)
        if not read_body(environ, part):
            os.unlink(part)
            raise Answer("400 Bad Request", body=b"Expected filesize does not match")
        os.replace(part, os.path.join(folder, "%05d" % int(member)))
        raise Answer("201 Created")
    if method == "MOVE" and member == ".file":
        path, disk = destination(environ, user)
        chunks = sorted(int(name) for name in os.listdir(folder))
        sizes = [os.path.getsize(os.path.join(folder, "%05d" % n)) for n in chunks]
        if not chunks or any(size < MIN_CHUNK for size in sizes[:-1]) or \
                any(size > 5 * 1024 ** 3 for size in sizes):
            raise Answer("400 Bad Request", body=b"chunks must be 5 MB to 5 GB, but the last")
        total = environ.get("HTTP_OC_TOTAL_LENGTH")
        if total is not None and int(total) != sum(sizes):
            raise Answer("400 Bad Request", body=(
                "Chunks on server do not sum up to %s but to %d bytes" % (total, sum(sizes))
            ).encode())
        if not os.path.isdir(os.path.dirname(disk)):
            raise Answer("409 Conflict")
        check_conditions(environ, disk, path, overwrite_header=True)
        when = mtime(environ)
        existed = os.path.isfile(disk)
        check_quota(user, sum(sizes), os.path.getsize(disk) if existed else 0)
        part = part_file(user)
        with open(part, "wb") as out:
            for n in chunks:
                with open(os.path.join(folder, "%05d" % n), "rb") as chunk:
                    while block := chunk.read(BLOCK):
                        out.write(block)
        os.replace(part, disk)
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
        with lock:
            uploads.pop((user, upload), None)
        written(environ, user, path, disk, existed, when)
    if method == "GET":
        raise Answer("405 Method Not Allowed", body=b"Reading intermediate uploads is not allowed")
    raise Answer("405 Method Not Allowed")


PUBLIC_TYPES = (3, 4)
SHARE_TYPES = (0, 1, 3, 4, 6)
READ, CREATE, DELETE = 1, 4, 8


class Ocs(Exception):
    def __init__(self, status, message, data=None):
        self.status, self.message, self.data = status, message, data


def ocs_xml(value):
    if isinstance(value, list):
        return "".join("<element>%s</element>" % ocs_xml(v) for v in value)
    if isinstance(value, dict):
        return "".join("<%s>%s</%s>" % (k, ocs_xml(v), k) for k, v in value.items())
    return "" if value is None else escape(str(value))


def ocs_answer(environ, status, message, data):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    as_json = query.get("format") == ["json"] or \
        "application/json" in environ.get("HTTP_ACCEPT", "")
    meta = {"status": "ok" if status == 200 else "failure", "statuscode": status,
            "message": message, "totalitems": "", "itemsperpage": ""}
    if as_json:
        body = json.dumps({"ocs": {"meta": meta, "data": data if data is not None else []}})
        kind = "application/json; charset=utf-8"
    else:
        body = ('<?xml version="1.0"?>\n<ocs><meta>%s</meta><data>%s</data></ocs>'
                % (ocs_xml(meta), ocs_xml(data)))
        kind = "text/xml; charset=UTF-8"
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}
    raise Answer("%d %s" % (status, reasons.get(status, "")), [("Content-Type", kind)],
                 body.encode())


def node_of(user, path):
    """The disk path and kind of a path relative to the user's files, or 404."""
    parts = [p for p in (path or "").split("/") if p]
    if not path or ".." in parts:
        raise Ocs(404, "Please specify a file or folder path" if not path
                  else "Wrong path, file/folder does not exist")
    disk = os.path.join(space(user), *parts)
    if not os.path.exists(disk):
        raise Ocs(404, "Wrong path, file/folder does not exist")
    return "/" + "/".join(parts), "folder" if os.path.isdir(disk) else "file"


def visible(share):
    return {k: v for k, v in share.items() if k != "password"}


def create_share(environ, user):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    form = {k: v[0] for k, v in parse_qs(environ["wsgi.input"].read(length).decode("utf-8"),
                                         keep_blank_values=True).items()}
    try:
        share_type = int(form.get("shareType", "-1"))
    except ValueError:
        share_type = -1
    path, item_type = node_of(user, form.get("path", ""))
    if share_type not in SHARE_TYPES:
        raise Ocs(400, "Unknown share type")
    try:
        permissions = int(form.get("permissions") or (READ if share_type == 3 else 31))
    except ValueError:
        raise Ocs(400, "Invalid permissions")
    if share_type == 3 and form.get("publicUpload") == "true" and item_type == "folder":
        permissions = 15
    with_ = form.get("shareWith", "")
    if share_type == 0 and with_ not in USERS:
        raise Ocs(404, "Please specify a valid user")
    if share_type == 1 and with_ not in GROUPS:
        raise Ocs(404, "Please specify a valid group")
    if share_type == 4 and "@" not in with_:
        raise Ocs(400, "Please specify a valid email address")
    if share_type == 6:
        raise Ocs(403, "Sharing %s failed because the back end does not allow shares from "
                  "type 6" % path)
    expiration = None
    if form.get("expireDate"):
        try:
            day = datetime.date.fromisoformat(form["expireDate"])
        except ValueError:
            raise Ocs(404, "Invalid date, date format must be YYYY-MM-DD")
        if day <= datetime.date.today():
            raise Ocs(404, "Expiration date is in the past")
        expiration = day.isoformat() + " 00:00:00"
    if not permissions & READ:
        raise Ocs(403, "Shares need at least read permissions")
    if item_type == "file" and permissions & DELETE:
        raise Ocs(403, "Files cannot be shared with delete permissions")
    if item_type == "file" and permissions & CREATE:
        raise Ocs(403, "Files cannot be shared with create permissions")
    if share_type in (0, 1) and with_ == user:
        raise Ocs(403, "Cannot share with yourself")
    with lock:
        if share_type in (0, 1) and any(
                s["uid_owner"] == user and s["path"] == path and s["share_type"] == share_type
                and s["share_with"] == with_ for s in shares):
            raise Ocs(403, "Sharing %s failed, because this item is already shared with %s"
                      % (path, with_))
        share = {"id": str(len(shares) + 1), "share_type": share_type, "uid_owner": user,
                 "uid_file_owner": user, "permissions": permissions, "path": path,
                 "item_type": item_type, "share_with": with_ if share_type != 3 else None,
                 "expiration": expiration, "token": None, "url": None,
                 "note": form.get("note", ""), "password": form.get("password") or None}
        if share_type in PUBLIC_TYPES:
            share["token"] = secrets.token_urlsafe(12)
            share["url"] = "http://%s/s/%s" % (environ.get("HTTP_HOST", "127.0.0.1"),
                                               share["token"])
        shares.append(share)
    return visible(share)


def shares_request(environ, user, rest):
    method = environ["REQUEST_METHOD"]
    try:
        if environ.get("HTTP_OCS_APIREQUEST", "").lower() != "true":
            body = json.dumps({"message": "CSRF check failed"}).encode()
            raise Answer("412 Precondition Failed", [("Content-Type", "application/json")],
                         body)
        if rest and method == "GET":
            with lock:
                found = [s for s in shares if s["id"] == rest and s["uid_owner"] == user]
            if not found:
                raise Ocs(404, "Wrong share ID, share does not exist")
            ocs_answer(environ, 200, "OK", [visible(found[0])])
        if not rest and method == "GET":
            query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            path = node_of(user, query["path"])[0] if query.get("path") else None
            with lock:
                mine = [visible(s) for s in shares
                        if s["uid_owner"] == user and path in (None, s["path"])]
            ocs_answer(environ, 200, "OK", mine)
        if not rest and method == "POST":
            ocs_answer(environ, 200, "OK", create_share(environ, user))
        raise Answer("405 Method Not Allowed")
    except Ocs as refusal:
        ocs_answer(environ, refusal.status, refusal.message, refusal.data)


def nextcloud(environ, start_response):
    # PEP 3333: PATH_INFO is the URL's path, percent-decoded, as latin-1 code points.
    path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
    method = environ["REQUEST_METHOD"]
    try:
        user = login_of(environ)
        if user is None:
            raise Answer("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="Nextcloud"')])
        if path.startswith(UPLOADS):
            owner, _, rest = path[len(UPLOADS):].partition("/")
            if owner != user:
                raise Answer("403 Forbidden")
            uploads_request(environ, user, rest)
        if path == SHARES or path.startswith(SHARES + "/"):
            shares_request(environ, user, path[len(SHARES):].strip("/"))
        if path.startswith(FILES + user + "/") and method == "PUT":
            put_file(environ, user, path)
        if path.startswith(FILES + user + "/") and method == "MKCOL":
            check_name(path)
        if path.startswith(FILES + user + "/") and method in ("MOVE", "COPY"):
            destination(environ, user)
    except Answer as answer:
        start_response(answer.status, answer.headers + [
            ("Content-Length", str(len(answer.body)))])
        return [answer.body]
    return dav(environ, start_response)


server = wsgi.Server((config["host"], config["port"]), nextcloud)
try:
    server.start()
except KeyboardInterrupt:
    server.stop()
'''


@dataclass
class Nextcloud(HttpServer):
    def space(self, login: str) -> Path:
        """The folder holding ``login``'s files (``/remote.php/dav/files/<login>/``)."""
        return self.root / "spaces" / login

    def uploads(self, login: str) -> Path:
        """The folder holding ``login``'s upload folders (``/remote.php/dav/uploads/<login>/``)."""
        return self.root / "uploads" / login

    def shares(self, login: str, path: str | None = None) -> list[dict]:
        """``login``'s shares (of ``path``, from its files, when given), read with a plain
        GET of the OCS Share API, as JSON."""
        answer = requests.get(f"{self.base_url}{SHARES}", auth=(login, self.users[login]),
                              params={"format": "json", **({"path": path} if path else {})},
                              headers={"OCS-APIRequest": "true"}, timeout=30)
        answer.raise_for_status()
        return answer.json()["ocs"]["data"]

    def space_url(self) -> str:
        """The batch's ``url`` for this server, as for a real Nextcloud."""
        return f"{self.base_url}/remote.php/dav/files/{{login}}/"

    @property
    def log(self) -> str:
        return tail(self.root / "nextcloud.log", 40)


def start_nextcloud(base: Path, users: dict[str, str], quotas: dict[str, int] | None = None,
                    put_cap: int = PUT_CAP, min_chunk: int = MIN_CHUNK,
                    windows_names: bool = False, groups: dict[str, list[str]] | None = None
                    ) -> Nextcloud:
    """Start the test server with its files in ``base`` (created if missing), one space per
    user of ``users`` (login: password). ``quotas`` (login: bytes): writes beyond are
    answered 507. ``put_cap``: the largest PUT taken (413 beyond; Nextcloud's default, 512
    MB, unless given). ``min_chunk``: the smallest chunk but the last (5 MiB unless given).
    ``windows_names``: "Windows compatible filenames" on. ``groups`` (name: logins): the
    groups a share may name.
    Raises RuntimeError with the log's end when it does not start."""
    root = Path(base)
    for folder in ("spaces", "uploads", "parts"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for login in users:
        (root / "spaces" / login).mkdir(exist_ok=True)
        (root / "uploads" / login).mkdir(exist_ok=True)
    (root / "launcher.py").write_text(LAUNCHER, encoding="utf-8")
    for _ in range(5):
        port = free_port()
        (root / "config.json").write_text(json.dumps({
            "host": "127.0.0.1", "port": port, "root": str(root), "users": users,
            "quotas": quotas or {}, "put_cap": put_cap, "min_chunk": min_chunk,
            "max_chunks": MAX_CHUNKS, "windows_names": windows_names,
            "groups": groups or {},
            "wsgidav": _wsgidav(root, port, users)}),
            encoding="utf-8")
        with open(root / "nextcloud.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(root / "launcher.py"), str(root / "config.json")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        server = Nextcloud("127.0.0.1", port, root, dict(users), process)
        if server.listening():
            return server
        server.stop()
    raise RuntimeError(f"the Nextcloud test server did not start: {tail(root / 'nextcloud.log')}")


def _wsgidav(root: Path, port: int, users: dict[str, str]) -> dict:
    shares = {login: f"/remote.php/dav/files/{login}" for login in users}
    return {
        "host": "127.0.0.1",
        "port": port,
        "provider_mapping": {share: str(root / "spaces" / login)
                             for login, share in shares.items()},
        "http_authenticator": {"domain_controller": None, "accept_basic": True,
                               "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {
            share: {login: {"password": users[login], "roles": []}}
            for login, share in shares.items()}},
        "lock_storage": True,
        "property_manager": True,
        "verbose": 1,
        "logging": {"enable": False},
    }
