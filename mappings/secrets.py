"""Secret references (``env:NAME``, ``file:PATH``): checking them and reading the secret.

A batch or users file never holds a password, only a reference to where it is. The value
read is a ``Secret``: a ``str`` whose ``repr()`` is masked, so a log line, a traceback or the
repr of a dataclass holding one does not show it. Errors and warnings are codes with
parameters (their sentences are in the catalogue, ``reports.i18n``); they name the variable
or the file, never the value, and never echo text that was not a reference (it may be a
password).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from connectors.base import BasculeError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Secret(str):
    """A resolved secret. Use it as the ``str`` it is; its ``repr()`` never shows it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


class SecretError(BasculeError):
    """A secret that cannot be had: codes ``secret_not_reference``, ``secret_env_unset``
    (``name``), ``secret_file_missing``, ``secret_empty`` (``path``),
    ``secret_file_unreadable`` (``path``, ``reason``)."""

    def __init__(self, code: str, **params: str) -> None:
        super().__init__(code=code, params=params)


@dataclass(frozen=True)
class SecretWarning:
    """Something to tell the user about a secret that could still be read: code
    ``secret_file_loose_permissions`` (``path``)."""

    code: str
    params: dict[str, str]


def reference_problem(text: str) -> str | None:
    """Why ``text`` is not a usable reference (an error code), or ``None`` if it is one."""
    kind, _, rest = text.partition(":")
    if kind == "env" and _ENV_NAME.fullmatch(rest):
        return None
    if kind == "file" and rest.strip():
        return None
    return "secret_not_reference"


def resolve_secret(ref: str, *, base_dir: Path) -> Secret:
    """The secret a reference points to. ``file:`` paths are relative to ``base_dir`` (the
    folder of the file that holds the reference); only the first line of the file counts."""
    if reference_problem(ref):
        raise SecretError("secret_not_reference")
    kind, _, rest = ref.partition(":")
    if kind == "env":
        value = os.environ.get(rest, "")
        if not value:
            raise SecretError("secret_env_unset", name=rest)
        return Secret(value)
    return Secret(_first_line(_file_path(rest, base_dir)))


def secret_file_path(ref: str, *, base_dir: Path) -> Path | None:
    """The file a ``file:`` reference names, or ``None`` for another kind of reference."""
    kind, _, rest = ref.partition(":")
    if kind != "file" or reference_problem(ref):
        return None
    return _file_path(rest, base_dir)


def _file_path(written: str, base_dir: Path) -> Path:
    path = Path(written.strip()).expanduser()
    return path if path.is_absolute() else base_dir / path


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            line = stream.readline()
    except FileNotFoundError:
        raise SecretError("secret_file_missing", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretError("secret_file_unreadable", path=str(path), reason=reason) from None
    value = line.rstrip("\r\n")
    if not value:
        raise SecretError("secret_empty", path=str(path))
    return value


def loose_permissions(path: Path) -> bool:
    """Whether users other than the owner may read the file (POSIX mode bits)."""
    if os.name != "posix":
        return False
    return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))


def secret_warning(ref: str, *, base_dir: Path) -> SecretWarning | None:
    """A warning for a ``file:`` reference whose file others may read, else ``None``."""
    path = secret_file_path(ref, base_dir=base_dir)
    try:
        loose = path is not None and loose_permissions(path)
    except OSError:
        return None
    if not loose:
        return None
    return SecretWarning("secret_file_loose_permissions", {"path": str(path)})
