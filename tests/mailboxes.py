"""Fill and read IMAP mailboxes with imapclient alone, independently of bascule's connectors,
so end-to-end tests check the target the way a person would."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from imapclient import IMAPClient

from tests.corpus import CorpusFolder, CorpusMessage
from tests.dovecot import Dovecot

NOT_KEPT = {b"\\Recent"}


def client(server: Dovecot, user: str, password: str | None = None) -> IMAPClient:
    imap = IMAPClient(server.host, server.port, ssl=False, timeout=60)
    imap.login(user, password or server.users[user])
    return imap


def separator(imap: IMAPClient) -> str:
    return imap.list_folders("", "")[0][1].decode() if imap.list_folders("", "") else "/"


def native(imap: IMAPClient, path: tuple[str, ...]) -> str:
    return separator(imap).join(path)


def seed(server: Dovecot, user: str, folders: Iterable[CorpusFolder]) -> None:
    """APPEND every message with its flags and internal date, creating folders."""
    with client(server, user) as imap:
        for folder in folders:
            name = native(imap, folder.path)
            if not imap.folder_exists(name):
                imap.create_folder(name)
            for message in folder.messages:
                append(imap, name, message)


def append(imap: IMAPClient, name: str, message: CorpusMessage) -> None:
    imap.append(name, message.raw, flags=sorted(message.flags), msg_time=message.internal_date)


def contents(server: Dovecot, user: str) -> dict[tuple[str, ...], Counter]:
    """Folder path -> Counter of (sha256, flags, internal date) for every message."""
    found: dict[tuple[str, ...], Counter] = {}
    with client(server, user) as imap:
        sep = separator(imap)
        for flags, _, name in imap.list_folders():
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            imap.select_folder(name, readonly=True)
            counter: Counter = Counter()
            uids = imap.search("ALL")
            for start in range(0, len(uids), 200):
                chunk = uids[start:start + 200]
                for data in imap.fetch(chunk, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).values():
                    counter[(
                        hashlib.sha256(data[b"BODY[]"]).hexdigest(),
                        frozenset(f.decode() for f in data[b"FLAGS"] if f not in NOT_KEPT),
                        _utc(data[b"INTERNALDATE"]),
                    )] += 1
            found[tuple(name.split(sep))] = counter
    return found


def filled(server: Dovecot, user: str) -> dict[tuple[str, ...], Counter]:
    """``contents`` of the folders holding messages only (a target creates parents and
    SPECIAL-USE folders the source may not have)."""
    return {path: found for path, found in contents(server, user).items() if found}


def expected(folders: Iterable[CorpusFolder], where: dict[tuple[str, ...], tuple[str, ...]]
             ) -> dict[tuple[str, ...], Counter]:
    """What the target must hold: each source folder's messages at its target path."""
    wanted: dict[tuple[str, ...], Counter] = {}
    for folder in folders:
        if folder.path not in where:
            continue
        counter = wanted.setdefault(where[folder.path], Counter())
        for message in folder.messages:
            counter[(
                hashlib.sha256(message.raw).hexdigest(), message.flags,
                _utc(message.internal_date),
            )] += 1
    return wanted


def landed(source_view: dict[tuple[str, ...], Counter],
           where: dict[tuple[str, ...], tuple[str, ...]]) -> dict[tuple[str, ...], Counter]:
    """What the target must hold, from what the source serves (an IMAP server may already
    have rewritten bytes it was given, e.g. bare LF line endings as CRLF)."""
    wanted: dict[tuple[str, ...], Counter] = {}
    for path, counter in source_view.items():
        if path in where and counter:
            wanted.setdefault(where[path], Counter()).update(counter)
    return wanted


def differences(expected: dict[tuple[str, ...], Counter],
                landed: dict[tuple[str, ...], Counter], shown: int = 5) -> str:
    """What differs between two dumps (``contents``, ``expected``, ``landed``): "" when they
    hold the same messages, else a few lines per folder for an assert's message.

    An empty folder counts as an absent one (targets create folders the source lacks). Per
    folder: **missing** (expected more copies than landed), **duplicated** (expected, landed
    more times), **extra** (landed, never expected); a missing and an extra message with the
    same bytes are shown together as **changed** (flags or internal date differ). At most
    ``shown`` messages of each kind are listed, with the total count.
    """
    lines = []
    for path in sorted(set(expected) | set(landed)):
        wanted, got = expected.get(path, Counter()), landed.get(path, Counter())
        missing, surplus = wanted - got, got - wanted
        if not missing and not surplus:
            continue
        duplicated = Counter({k: n for k, n in surplus.items() if k in wanted})
        extra = surplus - duplicated
        changed = []
        for item in list(missing):
            for twin in [e for e in extra if e[0] == item[0]]:
                pairs = min(missing[item], extra[twin])
                changed += [(item, twin)] * pairs
                missing[item] -= pairs
                extra[twin] -= pairs
        missing, extra = +missing, +extra
        kinds = [(f"{missing.total()} missing", [
                    f"missing x{n}: {_item(k)}" for k, n in missing.items()]),
                 (f"{duplicated.total()} duplicated", [
                    f"duplicated: {_item(k)} landed {got[k]} times, {wanted[k]} expected"
                    for k in duplicated]),
                 (f"{extra.total()} extra", [f"extra x{n}: {_item(k)}" for k, n in extra.items()]),
                 (f"{len(changed)} changed", [
                    f"changed: {_item(w)} landed as {_item(g)}" for w, g in changed])]
        counts = ", ".join(count for count, listed in kinds if listed)
        lines.append(f"{'/'.join(path)}: {counts} "
                     f"(expected {wanted.total()}, landed {got.total()})")
        for _, listed in kinds:
            lines += [f"  {line}" for line in listed[:shown]]
            if len(listed) > shown:
                lines.append(f"  ... and {len(listed) - shown} more")
    return "\n".join(lines)


def _item(key: tuple[str, frozenset[str], int]) -> str:
    digest, flags, moment = key
    when = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{digest[:12]} {{{' '.join(sorted(flags))}}} {when}"


def _utc(moment: datetime) -> int:
    """Internal dates compared as instants (Dovecot keeps them as file times, without the
    offset): imapclient hands back naive local times, which ``timestamp`` reads as local."""
    return int(moment.timestamp())


def write_users(folder: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path = folder / "users.csv"
    lines = ["source,target,source_secret,target_secret"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
