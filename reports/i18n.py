"""Every sentence a person reads, in English and French, looked up by a stable code.

The sentences live in gettext catalogues beside this module: ``locale/bascule.pot`` holds
the English, ``locale/<lang>/LC_MESSAGES/bascule.po`` each translation. An entry's
``msgctxt`` is its code and its ``msgid`` the English sentence. The code is what reports
carry and tests look at, so it must not change when the English is reworded; with the code
as context, the English can stay the ``msgid`` all the same, which keeps a translation an
ordinary ``.po`` file that any gettext tool handles and that a translator reads in English,
not in codes. After editing the English, ``pybabel update -i reports/locale/bascule.pot -d
reports/locale -D bascule --ignore-obsolete`` carries the change to every translation: a
reworded entry keeps its old translation marked fuzzy, a new one comes with an empty
``msgstr``, and a test refuses both until a translator has seen them.

The files are read the first time a sentence is rendered, by a reader of the few
constructs these files use (``#,`` flags, ``msgctxt``, ``msgid``, ``msgid_plural``,
``msgstr``, ``msgstr[n]``, continued strings), which takes a hundredth of the time Babel's
full reader and compiler did at the start of every command; a fuzzy or empty translation is
left out, as gettext's compilers do, and its English shown. Plural forms are chosen by the
``Plural-Forms`` of the file's header, read by Python's ``gettext``: nothing to build after
``pip install``. Babel reads the catalogues whole in the tests (``read_catalogue``) and
writes numbers, sizes and durations the CLDR's way; it is imported when first needed.

Placeholders are ``str.format`` fields. An entry with a plural (``msgid_plural``) chooses
its form by the ``count`` parameter, which is written the language's way (``1,234`` /
``1 234``), as is a ``Number``; a ``Size`` is written by ``format_size``, a ``Duration`` by
``format_duration``; a ``Text`` given as a parameter is
rendered in the same language as the sentence that holds it. Other values are written as
they are: a line number, a PID, a path.
"""

from __future__ import annotations

import gettext
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from babel.messages.catalog import Catalog

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "bascule"
LANGUAGES = ("en", "fr")
"""English, the language of the catalogue's ``msgid``, then each translation."""

MISSING = "?"
"""Shown for a placeholder that was given no value, rather than failing the report."""

SIZE_UNITS = ("digital-kilobyte", "digital-megabyte", "digital-gigabyte", "digital-terabyte")


class Size(int):
    """A number of bytes, written with ``format_size`` in the language of the sentence."""

    __slots__ = ()


class Number(int):
    """A number other than ``count``, written the language's way too (``1,000`` /
    ``1 000``)."""

    __slots__ = ()


def format_size(size: int, lang: str) -> str:
    """A number of bytes as a person reads it: ``512 bytes`` / ``512 octets`` below a
    kilobyte, then ``1.5 MB`` / ``1,5 Mo`` (CLDR's units, powers of 1000, one decimal).

    Bytes are written out in full because CLDR's short English form has no plural
    ("2 byte"); the larger units take the short form, as file managers write them."""
    from babel.units import format_unit

    if size < 1000:
        return format_unit(size, "digital-byte", length="long", locale=lang)
    value = float(size)
    for unit in SIZE_UNITS:
        value /= 1000
        if round(value, 1) < 1000:
            break
    return format_unit(round(value, 1), unit, length="short", format="#,##0.#", locale=lang)


class Duration(float):
    """A number of seconds, written with ``format_duration`` in the language of the
    sentence."""

    __slots__ = ()


def format_duration(seconds: float, lang: str) -> str:
    """An estimated duration as a person reads it, to the precision an estimate has:
    seconds below a minute (``45 sec`` / ``45 s``), whole minutes below an hour
    (``4 min``), then hours and minutes to five minutes (``2 hr 35 min`` / ``2 h 35 min``).
    CLDR's short units, as clocks and timers write them."""
    from babel.units import format_unit

    if seconds < 59.5:
        return format_unit(max(1, round(seconds)), "duration-second", length="short",
                           locale=lang)
    if seconds < 3600 - 30:
        return format_unit(round(seconds / 60), "duration-minute", length="short",
                           locale=lang)
    minutes = round(seconds / 300) * 5
    hours, minutes = divmod(minutes, 60)
    parts = [format_unit(hours, "duration-hour", length="short", locale=lang)]
    if minutes:
        parts.append(format_unit(minutes, "duration-minute", length="short", locale=lang))
    return " ".join(parts)


@dataclass(frozen=True)
class Text:
    """A sentence to show, kept as its code and parameters until it is rendered."""

    code: str
    params: Mapping[str, object] = field(default_factory=dict)
    written: tuple[str, str] | None = None
    """English and French already written by the layer that found the problem (a
    connector that explains a sign-in refusal in both languages)."""

    @classmethod
    def of(cls, code: str, **params: object) -> Text:
        return cls(code, params)

    @classmethod
    def both(cls, code: str, en: str, fr: str) -> Text:
        return cls(code, {}, (en, fr))

    def render(self, lang: str) -> str:
        if self.written:
            return self.written[1] if lang == "fr" else self.written[0]
        params = dict(self.params)
        count = params.get("count")
        if isinstance(count, int):
            from babel.numbers import format_decimal

            params["count"] = format_decimal(count, locale=lang)
        return _Sentence(lang).format(_template(self.code, lang, count), **params)

    @property
    def en(self) -> str:
        return self.render("en")

    @property
    def fr(self) -> str:
        return self.render("fr")

    def __str__(self) -> str:
        return self.render(language())


class _Sentence(string.Formatter):
    """Fills a template in one language: counts, sizes and nested texts its way."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def get_value(self, key: int | str, args: object, kwargs: Mapping[str, object]) -> object:
        return kwargs.get(str(key), MISSING)

    def format_field(self, value: object, format_spec: str) -> str:
        if isinstance(value, Text):
            value = value.render(self.lang)
        elif isinstance(value, Size):
            value = format_size(value, self.lang)
        elif isinstance(value, Number):
            from babel.numbers import format_decimal

            value = format_decimal(value, locale=self.lang)
        elif isinstance(value, Duration):
            value = format_duration(value, self.lang)
        return super().format_field(value, format_spec)


def _template(code: str, lang: str, count: object) -> str:
    entry = _english().get(code)
    if entry is None:
        return "{detail}"
    sentences, plural = _translations(lang)
    translated = sentences.get(code)
    if isinstance(entry, tuple):
        if not isinstance(translated, list):  # English: one for a count of 1, the other else
            return entry[0] if count == 1 else entry[1]
        index = plural(count if isinstance(count, int) else 0)
        return translated[index] if index < len(translated) else entry[1]
    return translated if isinstance(translated, str) else entry


@cache
def _english() -> dict[str, str | tuple[str, str]]:
    """The catalogue's English by code, as ``bascule.pot`` writes it: a sentence, or its
    singular and plural."""
    return {code: (entry["msgid"], entry["msgid_plural"]) if "msgid_plural" in entry
            else entry["msgid"] for code, entry in _entries(LOCALE_DIR / f"{DOMAIN}.pot")}


def read_catalogue(path: Path, lang: str | None = None) -> Catalog:
    """A ``.po`` or ``.pot`` file as Babel reads it."""
    from babel.messages.pofile import read_po

    with path.open("rb") as stream:
        return read_po(stream, locale=lang, domain=DOMAIN)


def catalogue_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def _translations(lang: str) -> tuple[dict[str, str | list[str]], Any]:
    """A language's sentences by code (a list of plural forms for an entry with a plural)
    and its plural rule; none for English, whose sentences are the ``msgid`` themselves."""
    path = catalogue_path(lang)
    if lang == "en" or not path.exists():
        return {}, lambda n: int(n != 1)
    found: dict[str, str | list[str]] = {}
    rule = "nplurals=2; plural=(n != 1);"
    for code, entry in _entries(path, header=True):
        if not code:
            rule = next((line.partition(":")[2] for line in entry.get("msgstr", "").splitlines()
                         if line.lower().startswith("plural-forms:")), rule)
            continue
        if "fuzzy" in entry.get("flags", ""):
            continue
        if "msgid_plural" in entry:
            forms = [entry.get(f"msgstr[{n}]", "") for n in range(_count_forms(entry))]
            if all(forms):
                found[code] = forms
        elif entry.get("msgstr"):
            found[code] = entry["msgstr"]
    expression = rule.partition("plural=")[2].strip().rstrip(";")
    return found, gettext.c2py(expression)


def _count_forms(entry: dict[str, str]) -> int:
    return sum(1 for key in entry if key.startswith("msgstr["))


def _entries(path: Path, header: bool = False) -> list[tuple[str, dict[str, str]]]:
    """``(msgctxt, fields)`` of each entry of a ``.po`` or ``.pot`` file; fields by keyword
    (``msgid``, ``msgid_plural``, ``msgstr``, ``msgstr[0]``..., and ``flags``, the ``#,``
    line), each string unescaped and its continued parts joined. The header (no
    ``msgctxt``, an empty ``msgid``) comes as ``("", fields)`` when asked for; an entry
    marked obsolete (``#~``) is left out."""
    entries: list[tuple[str, dict[str, str]]] = []
    fields: dict[str, str] = {}
    current = ""

    def finish() -> None:
        if "msgid" in fields:
            code = fields.pop("msgctxt", "")
            if code or (header and not fields["msgid"]):
                entries.append((code, dict(fields)))
        fields.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            finish()
        elif line.startswith("#,"):
            fields["flags"] = line[2:]
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            fields[current] += _unquote(line)
        else:
            keyword, _, rest = line.partition(" ")
            if keyword in ("msgctxt", "msgid") and keyword in fields or (
                    keyword == "msgctxt" and "msgid" in fields):
                finish()
            current = keyword
            fields[current] = _unquote(rest.strip())
    finish()
    return entries


def _unquote(text: str) -> str:
    """A C string of a ``.po`` file, without its quotes, its escapes read."""
    inner = text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    if "\\" not in inner:
        return inner
    out, index = [], 0
    while index < len(inner):
        char = inner[index]
        if char == "\\" and index + 1 < len(inner):
            following = inner[index + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r"}.get(following, following))
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


_chosen: list[str | None] = [None]


def choose_language(lang: str | None) -> None:
    """The language asked for on the command line (``--lang``), for this command only."""
    _chosen[0] = lang


def language() -> str:
    """``fr`` or ``en``: ``--lang`` first, then BASCULE_LANG, then the locale variables."""
    if _chosen[0]:
        return _chosen[0]
    for name in ("BASCULE_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            return "fr" if value.lower().startswith("fr") else "en"
    return "en"
