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

The files are read with Babel the first time a sentence is rendered, and a translation is
compiled in memory into Python's ``gettext``, which picks plural forms by the
``Plural-Forms`` of its header: nothing to build after ``pip install``.

Placeholders are ``str.format`` fields. An entry with a plural (``msgid_plural``) chooses
its form by the ``count`` parameter, which is written the language's way (``1,234`` /
``1 234``), as is a ``Number``; a ``Size`` is written by ``format_size``, a ``Duration`` by
``format_duration``; a ``Text`` given as a parameter is
rendered in the same language as the sentence that holds it. Other values are written as
they are: a line number, a PID, a path.
"""

from __future__ import annotations

import gettext
import io
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.units import format_unit

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
            value = format_decimal(value, locale=self.lang)
        elif isinstance(value, Duration):
            value = format_duration(value, self.lang)
        return super().format_field(value, format_spec)


def _template(code: str, lang: str, count: object) -> str:
    entry = _english().get(code)
    if entry is None:
        return "{detail}"
    translations = _translations(lang)
    if entry.pluralizable:
        singular, plural = entry.id
        return translations.npgettext(code, singular, plural,
                                      count if isinstance(count, int) else 0)
    return translations.pgettext(code, entry.id)


@cache
def _english() -> dict[str, Message]:
    """The catalogue's entries by code, as ``bascule.pot`` writes them."""
    return {entry.context: entry for entry in read_catalogue(LOCALE_DIR / f"{DOMAIN}.pot")
            if entry.context}


def read_catalogue(path: Path, lang: str | None = None) -> Catalog:
    """A ``.po`` or ``.pot`` file as Babel reads it."""
    with path.open("rb") as stream:
        return read_po(stream, locale=lang, domain=DOMAIN)


def catalogue_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def _translations(lang: str) -> gettext.NullTranslations:
    """English is the ``msgid`` itself (``NullTranslations`` picks ``msgid`` for one,
    ``msgid_plural`` for any other count); a translation is its ``.po`` compiled."""
    path = catalogue_path(lang)
    if lang == "en" or not path.exists():
        return gettext.NullTranslations()
    compiled = io.BytesIO()
    write_mo(compiled, read_catalogue(path, lang))
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


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
