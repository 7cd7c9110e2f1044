"""The users table: which source account moves to which target account, with which secrets.

The DSI exports it from Entra ID / Active Directory and edits it in a spreadsheet, so the
reader takes what Excel writes: UTF-8 with or without a byte-order mark, ``,`` or ``;``
between cells (French Excel writes ``;``), blank lines, extra columns. The header is
required; ``source`` and ``target`` columns must be there, ``source_secret`` and
``target_secret`` may be left out (a source read with an application's own credentials
needs none per user). Secrets are references (``env:NAME``, ``file:PATH``), never the
password itself. Every problem of the file is reported at once, with its line number, as
a code with parameters (the sentences are in the catalogue, ``reports.i18n``). Addresses
compare without case.

A line whose source is ``site:...`` or ``team:...`` is a space (a SharePoint site, one of
its document libraries, a Team) mapped to a target space: ``mappings.spaces`` states the
syntax.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from connectors.base import BasculeError
from mappings.secrets import SecretWarning, reference_problem, secret_warning
from mappings.spaces import space_problem

REQUIRED_COLUMNS = ("source", "target")
SECRET_COLUMNS = ("source_secret", "target_secret")


@dataclass(frozen=True)
class UserMapping:
    """One line of the users table."""

    source: str
    target: str
    source_secret: str | None
    """A secret reference, resolved later with ``mappings.secrets.resolve_secret``."""
    target_secret: str | None
    line: int


class UsersFileError(BasculeError):
    """One problem of the users file. ``line`` is ``None`` for the file as a whole; the
    parameter ``where`` is ``file:line``, or the file.

    Codes: ``users_file_missing``, ``users_file_unreadable`` (``reason``),
    ``users_file_not_utf8``, ``users_file_empty``, ``users_column_missing`` and
    ``users_column_twice`` (``column``), ``users_empty_source``, ``users_empty_target``,
    ``users_duplicate_source`` (``source``, ``first_line``), ``users_duplicate_target``
    (``target``, ``source``, ``first_line``), ``users_secret_not_reference`` (``column``),
    ``users_unknown_user`` (``name``), ``users_space_malformed`` (``source``: a ``site:`` or
    ``team:`` line without its name, or ``site:<site>/`` without its library).
    """

    def __init__(self, code: str, file: Path, line: int | None, **params: str) -> None:
        where = f"{file}:{line}" if line is not None else str(file)
        super().__init__(code=code, params={"where": where, **params})
        self.file = file
        self.line = line


class UsersFileInvalid(BasculeError):
    """Every problem found in a users file; ``errors`` lists them in file order."""

    code = "users_file_invalid"

    def __init__(self, errors: Iterable[UsersFileError]) -> None:
        self.errors = tuple(errors)
        super().__init__(params={"count": len(self.errors)})


class UserMap:
    """The users table, in file order."""

    def __init__(self, file: Path, mappings: Iterable[UserMapping]) -> None:
        self.file = file
        self._mappings = tuple(mappings)
        self._by_source = {mapping.source.casefold(): mapping for mapping in self._mappings}

    def __iter__(self) -> Iterator[UserMapping]:
        return iter(self._mappings)

    def __len__(self) -> int:
        return len(self._mappings)

    def lookup(self, source: str) -> UserMapping | None:
        return self._by_source.get(source.strip().casefold())

    def secret_warnings(self) -> list[SecretWarning]:
        """One warning per secret file of the table that other users may read."""
        references = {ref for m in self._mappings for ref in (m.source_secret, m.target_secret)
                      if ref}
        found = (secret_warning(ref, base_dir=self.file.parent) for ref in sorted(references))
        return [warning for warning in found if warning is not None]

    def subset(self, names: Iterable[str]) -> UserMap:
        """The users named (``--users``), in file order. Raises ``UsersFileInvalid`` listing
        every name that is not in the table."""
        wanted = {name.strip().casefold(): name for name in names}
        unknown = [name for folded, name in wanted.items() if folded not in self._by_source]
        if unknown:
            raise UsersFileInvalid(
                UsersFileError("users_unknown_user", self.file, None, name=name)
                for name in unknown
            )
        return UserMap(
            self.file, (m for m in self._mappings if m.source.casefold() in wanted)
        )


def load_users(path: Path) -> UserMap:
    """Read a users table. Raises ``UsersFileInvalid`` with every problem found."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise UsersFileInvalid([UsersFileError("users_file_missing", path, None)]) from None
    except OSError as exc:
        raise UsersFileInvalid([UsersFileError(
            "users_file_unreadable", path, None, reason=exc.strerror or str(exc))]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise UsersFileInvalid([UsersFileError("users_file_not_utf8", path, line)]) from None
    return _UsersReader(path, text).read()


class _UsersReader:
    """One reading of one users file, collecting problems as it goes."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.errors: list[UsersFileError] = []

    def problem(self, code: str, line: int | None, **params: str) -> None:
        self.errors.append(UsersFileError(code, self.path, line, **params))

    def read(self) -> UserMap:
        rows = list(self.rows())
        if not rows:
            self.problem("users_file_empty", None)
            raise UsersFileInvalid(self.errors)
        header_line, header = rows[0]
        columns = self.columns(header_line, header)
        mappings = [self.mapping(line, cells, columns) for line, cells in rows[1:]]
        self.check_unique(mappings)
        if self.errors:
            raise UsersFileInvalid(sorted(self.errors, key=lambda e: e.line or 0))
        return UserMap(self.path, mappings)

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Non-blank rows with the line they start on."""
        reader = csv.reader(self.text.splitlines(keepends=True), delimiter=self.delimiter())
        start = 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield start, [cell.strip() for cell in cells]
            start = reader.line_num + 1

    def delimiter(self) -> str:
        # The header decides: Excel in French writes ";" and may leave "," inside cells.
        header = next((line for line in self.text.splitlines() if line.strip()), "")
        return ";" if header.count(";") > header.count(",") else ","

    def columns(self, line: int, header: list[str]) -> dict[str, int]:
        names = [cell.casefold() for cell in header]
        columns: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in REQUIRED_COLUMNS + SECRET_COLUMNS and name in columns:
                self.problem("users_column_twice", line, column=name)
            columns.setdefault(name, index)
        for name in REQUIRED_COLUMNS:
            if name not in columns:
                self.problem("users_column_missing", line, column=name)
        return columns

    def mapping(self, line: int, cells: list[str], columns: dict[str, int]) -> UserMapping:
        def cell(name: str) -> str:
            index = columns.get(name)
            return cells[index] if index is not None and index < len(cells) else ""

        source, target = cell("source"), cell("target")
        if not source and "source" in columns:
            self.problem("users_empty_source", line)
        malformed = space_problem(source)
        if malformed:
            self.problem(malformed, line, source=source)
        if not target and "target" in columns:
            self.problem("users_empty_target", line)
        secrets = {name: self.secret(line, name, cell(name)) for name in SECRET_COLUMNS}
        return UserMapping(
            source, target, secrets["source_secret"], secrets["target_secret"], line
        )

    def secret(self, line: int, column: str, value: str) -> str | None:
        if not value:
            return None
        if reference_problem(value):
            self.problem("users_secret_not_reference", line, column=column)
            return None
        return value

    def check_unique(self, mappings: list[UserMapping]) -> None:
        first_source: dict[str, UserMapping] = {}
        first_target: dict[str, UserMapping] = {}
        for mapping in mappings:
            if mapping.source:
                earlier = first_source.setdefault(mapping.source.casefold(), mapping)
                if earlier is not mapping:
                    self.problem("users_duplicate_source", mapping.line,
                                 source=mapping.source, first_line=str(earlier.line))
            if mapping.target:
                earlier = first_target.setdefault(mapping.target.casefold(), mapping)
                if earlier is not mapping:
                    self.problem("users_duplicate_target", mapping.line,
                                 target=mapping.target, source=earlier.source,
                                 first_line=str(earlier.line))
