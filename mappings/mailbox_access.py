"""FullAccess and SendAs over Exchange mailboxes, from the CSV the DSI exports with the
Exchange Management Shell: they are Active Directory permissions, which EWS does not give.

The file is what ``EXPORT_COMMAND`` writes (and ``SEND_AS_COMMAND`` appends to): one line per
permission, with the columns ``Mailbox`` (the mailbox's primary address), ``User`` (the
grantee's primary address, or its ``DOMAIN\\account`` when it has no mailbox), and
``AccessRights`` (``FullAccess``, ``SendAs``, others ignored); ``Deny`` (``True``: an
explicit refusal, kept as such) is optional. ``Identity`` is read as ``Mailbox`` when the
latter is absent. A file that cannot be read, lacks a column, or names a mailbox otherwise
than by its address is a batch error naming the line (``AccessFileInvalid``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from connectors.base import BasculeError

EXPORT_COMMAND = (
    'Get-Mailbox -ResultSize Unlimited | Get-MailboxPermission | Where-Object { '
    '-not $_.IsInherited -and $_.AccessRights -like "*FullAccess*" -and '
    '$_.User -notlike "NT AUTHORITY\\*" -and $_.User -notlike "S-1-5-*" } | Select-Object '
    '@{n="Mailbox";e={(Get-Mailbox $_.Identity).PrimarySmtpAddress}},'
    '@{n="User";e={$r = Get-Recipient $_.User.ToString() -ErrorAction SilentlyContinue; '
    'if ($r) { $r.PrimarySmtpAddress } else { $_.User }}},'
    '@{n="AccessRights";e={$_.AccessRights -join ","}},Deny | '
    'Export-Csv -NoTypeInformation -Encoding UTF8 full-access.csv')
"""FullAccess granted by hand (not inherited, not the system's own accounts)."""
SEND_AS_COMMAND = (
    'Get-Mailbox -ResultSize Unlimited | Get-ADPermission | Where-Object { '
    '-not $_.IsInherited -and $_.ExtendedRights -like "*Send-As*" -and '
    '$_.User -notlike "NT AUTHORITY\\*" -and $_.User -notlike "S-1-5-*" } | Select-Object '
    '@{n="Mailbox";e={(Get-Mailbox $_.Identity).PrimarySmtpAddress}},'
    '@{n="User";e={$r = Get-Recipient $_.User.ToString() -ErrorAction SilentlyContinue; '
    'if ($r) { $r.PrimarySmtpAddress } else { $_.User }}},'
    '@{n="AccessRights";e={"SendAs"}},Deny | '
    'Export-Csv -NoTypeInformation -Encoding UTF8 -Append full-access.csv')
"""SendAs, an Active Directory extended right, appended to the same file."""
KINDS = {"fullaccess": "full_access", "sendas": "send_as"}
"""``AccessRights`` values carried -> the kind of the exported row."""


class AccessFileInvalid(BasculeError):
    """The FullAccess file cannot be used (``ews_access_file_...``): ``file``, ``line`` (0
    for the whole file), and in ``detail`` what was read there."""


@dataclass(frozen=True)
class AccessEntry:
    """One FullAccess or SendAs of the file."""

    mailbox: str
    user: str
    kind: str
    """``full_access`` or ``send_as``."""
    rights: str
    """``FullAccess``, ``SendAs``, or either with ``Deny`` for an explicit refusal."""
    line: str
    """Where in the file, for the exported row's ``source_id``: ``full-access.csv:12``."""


def read_access_file(path: Path) -> list[AccessEntry]:
    """Every FullAccess and SendAs of the file, in its order; ``AccessFileInvalid`` for a
    file that cannot be used."""

    def invalid(code: str, line: int, detail: str = "") -> AccessFileInvalid:
        return AccessFileInvalid(detail, code=code, params={"file": str(path), "line": line})

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise invalid("ews_access_file_missing", 0) from None
    except (OSError, UnicodeDecodeError) as error:
        raise invalid("ews_access_file_unreadable", 0, str(error)) from None
    reader = csv.DictReader(text.splitlines())
    columns = {name.strip().casefold(): name for name in reader.fieldnames or []}
    mailbox_column = columns.get("mailbox") or columns.get("identity")
    if mailbox_column is None or "user" not in columns or "accessrights" not in columns:
        raise invalid("ews_access_file_columns", 1, ", ".join(reader.fieldnames or []))
    entries: list[AccessEntry] = []
    for number, row in enumerate(reader, start=2):
        if None in row:
            raise invalid("ews_access_file_shape", number)
        mailbox = (row.get(mailbox_column) or "").strip()
        user = (row.get(columns["user"]) or "").strip()
        if "@" not in mailbox or not user:
            raise invalid("ews_access_file_address", number, mailbox)
        deny = (row.get(columns.get("deny", ""), "") or "").strip().lower() == "true"
        for right in (row.get(columns["accessrights"]) or "").split(","):
            kind = KINDS.get(right.strip().replace("-", "").casefold())
            if kind is not None:
                name = "FullAccess" if kind == "full_access" else "SendAs"
                entries.append(AccessEntry(mailbox, user, kind,
                                           f"Deny {name}" if deny else name,
                                           f"{path.name}:{number}"))
    return entries
