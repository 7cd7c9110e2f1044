"""The catalogue of sentences: complete in both languages, plurals and sizes each language's
way, and French through to the detail of a message."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest

from mappings.calendar import NOTE_CODES as CALENDAR_NOTES
from mappings.contacts import NOTE_CODES as CONTACT_NOTES
from mappings.tasks import NOTE_CODES as TASK_NOTES
from reports.i18n import (
    LANGUAGES,
    LOCALE_DIR,
    Duration,
    Size,
    Text,
    catalogue_path,
    format_size,
    read_catalogue,
)
from tests.cli import bascule

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("migrate", "connectors", "mappings", "reports")

CODE_FIRST = {"of", "SourceNote", "Finding", "Note", "_note", "note", "problem",
              "UsersFileError", "SecretError", "FolderRulesError", "SecretWarning"}
"""Calls whose first argument, when written as a string, is a catalogue code."""

FAMILIES = {f"{code}_total" for code in CALENDAR_NOTES + CONTACT_NOTES + TASK_NOTES}
"""Codes made by adding to another: the Graph source counts each kind of note per
calendar or address book (``<code>_total``)."""


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _chosen(value: ast.AST | None) -> set[str]:
    """The strings an expression may be: a string, either branch of ``a if c else b``, or
    the items of a tuple."""
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return {value.value}
    if isinstance(value, ast.IfExp):
        return _chosen(value.body) | _chosen(value.orelse)
    if isinstance(value, ast.Tuple):
        return set().union(*(_chosen(item) for item in value.elts))
    return set()


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def codes_in_source() -> set[str]:
    """The codes the code base gives: first argument of ``Text.of``, ``SourceNote``... and
    the other calls of ``CODE_FIRST``, every ``code=`` keyword, every string assigned to a
    ``code``, the ``..._CODES`` of ``mappings``, the kinds of ``LedgerError``
    (``ledger_<kind>``), and ``FAMILIES``."""
    found = set(FAMILIES)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    first = node.args[0] if node.args else None
                    if _name(node.func) in CODE_FIRST:
                        found |= _chosen(first)
                    if _name(node.func) == "LedgerError":
                        found |= {f"ledger_{kind}" for kind in _chosen(first)}
                    for keyword in node.keywords:
                        if keyword.arg == "code":
                            found |= _chosen(keyword.value)
                if isinstance(node, ast.Assign | ast.AnnAssign):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    names = [_name(target) for target in targets]
                    if "code" in names or (package == "mappings" and any(
                            name.endswith("_CODES") for name in names)):
                        found |= _chosen(node.value)
                    if path.name == "ledger.py" and "kind" in names:
                        found |= {f"ledger_{kind}" for kind in _chosen(node.value)}
    return found


def all_strings_in_source() -> set[str]:
    return {text for package in PACKAGES for path in (ROOT / package).rglob("*.py")
            for text in _strings(ast.parse(path.read_text(encoding="utf-8")))}


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


ENGLISH = {entry.context: entry for entry in read_catalogue(LOCALE_DIR / "bascule.pot")
           if entry.context}
TRANSLATIONS = {lang: read_catalogue(catalogue_path(lang), lang) for lang in LANGUAGES
                if lang != "en"}


def test_every_code_the_code_base_gives_is_in_the_catalogue() -> None:
    given = codes_in_source()
    assert {"unsafe_name", "users_duplicate_target", "secret_env_unset", "excluded",
            "kept_as_x_property", "ledger_disk_full", "mailbox_full"} <= given
    assert sorted(given - ENGLISH.keys()) == []


@pytest.mark.parametrize("path", [LOCALE_DIR / "bascule.pot",
                                  *(catalogue_path(lang) for lang in TRANSLATIONS)])
def test_no_code_has_two_entries(path: Path) -> None:
    """A second entry for a code would hide the first (the catalogue keeps one)."""
    codes = [line for line in path.read_text(encoding="utf-8").splitlines()
             if line.startswith("msgctxt ")]
    assert sorted({c for c in codes if codes.count(c) > 1}) == []


def test_every_entry_of_the_catalogue_is_used() -> None:
    assert sorted(ENGLISH.keys() - all_strings_in_source() - codes_in_source()) == []


@pytest.mark.parametrize("lang", sorted(TRANSLATIONS))
def test_each_translation_has_every_entry_with_the_same_placeholders(lang: str) -> None:
    catalogue = TRANSLATIONS[lang]
    translated = {entry.context: entry for entry in catalogue if entry.context}
    assert sorted(translated.keys() ^ ENGLISH.keys()) == []
    assert catalogue.obsolete == {}
    for code, english in ENGLISH.items():
        entry = translated[code]
        assert entry.id == english.id, f"{code}: its English differs from bascule.pot"
        assert not entry.fuzzy, f"{code}: fuzzy"
        forms = entry.string if english.pluralizable else (entry.string,)
        wanted = fields(english.id[-1] if english.pluralizable else english.id)
        assert all(forms), f"{code}: not translated"
        for form in [*forms, *(english.id if english.pluralizable else ())]:
            assert fields(form) == wanted, f"{code}: {form!r} has other placeholders"
        if english.pluralizable:
            assert "count" in wanted, f"{code}: a plural needs a count"


@pytest.mark.parametrize(("count", "en", "fr"), [
    (0, "0 folders", "0 dossier"),
    (1, "1 folder", "1 dossier"),
    (2, "2 folders", "2 dossiers"),
    (12345, "12,345 folders", "12\u202f345 dossiers"),
])
def test_plurals_follow_each_language(count: int, en: str, fr: str) -> None:
    folders = Text.of("count_folders", count=count)
    assert (folders.en, folders.fr) == (en, fr)


def test_a_message_count_in_both_languages() -> None:
    assert [Text.of("count_messages", count=n).en for n in (0, 1, 2)] == [
        "0 messages", "1 message", "2 messages"]
    assert [Text.of("count_messages", count=n).fr for n in (0, 1, 2)] == [
        "0 message", "1 message", "2 messages"]


@pytest.mark.parametrize(("size", "en", "fr"), [
    (0, "0 bytes", "0\xa0octet"),
    (1, "1 byte", "1\xa0octet"),
    (999, "999 bytes", "999\xa0octets"),
    (1500, "1.5 kB", "1,5\u202fko"),
    (1_500_000, "1.5 MB", "1,5\u202fMo"),
    (999_999, "1 MB", "1\u202fMo"),
    (2_000_000_000_000_000, "2,000 TB", "2\u202f000\u202fTo"),
])
def test_sizes_are_written_with_cldr_units(size: int, en: str, fr: str) -> None:
    assert (format_size(size, "en"), format_size(size, "fr")) == (en, fr)


def test_a_full_mailbox_counts_and_sizes_in_its_language() -> None:
    one = Text.of("mailbox_full", count=1, size=Size(1_500_000))
    assert "1 message (1.5 MB) not copied" in one.en
    assert "1 message (1,5\u202fMo) non copié ;" in one.fr
    many = Text.of("mailbox_full", count=1200, size=Size(512))
    assert "1,200 messages (512 bytes) not copied" in many.en
    assert "1\u202f200 messages (512\xa0octets) non copiés ;" in many.fr


def test_a_summary_counts_each_thing_its_own_way() -> None:
    from reports.summary import summary_text

    estimate = Text.of("estimate_range", duration=Duration(250), low=Duration(165),
                       high=Duration(385), basis=Text.of("estimate_from_history", count=2))
    plan = summary_text("plan", {"units": 1, "to_copy": 0, "to_copy_bytes": 2048,
                                 "errors": 0, "warnings": 2,
                                 "estimate": {"code": "estimate_range",
                                              "message_en": estimate.en,
                                              "message_fr": estimate.fr}})
    assert plan.en == ("1 folder, 0 messages, 2 kB to copy, about 4 min, likely 3 min to "
                       "6 min (estimate from the last 2 runs); 0 blocking errors, 2 warnings")
    assert plan.fr == ("1 dossier, 0 message, 2\u202fko à copier, environ 4\xa0min, "
                       "probablement de 3\xa0min à 6\xa0min "
                       "(estimation d'après les 2 dernières exécutions) ; 0 erreur bloquante, "
                       "2 avertissements")


def test_a_name_that_would_leave_its_folder_is_refused_in_french_through_to_its_detail(
        tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "users.csv").write_text("source,target\n..,alice\n", encoding="utf-8")
    (tmp_path / "batch.toml").write_text(
        'name = "n"\n[source]\ntype = "maildir"\npath = "export"\n'
        '[target]\ntype = "maildir"\npath = "target"\n[run]\nwork_dir = "work"\n',
        encoding="utf-8")
    code, output = bascule("--lang", "fr", "plan", str(tmp_path / "batch.toml"))
    assert code == 2
    refused = next(line for line in output.splitlines() if "nom refusé" in line)
    root = tmp_path.resolve() / "export"
    assert refused == (f"  - nom refusé, il sortirait de son dossier : « .. » n'est pas un "
                       f"simple nom sous {root}")
    code, output = bascule("--lang", "en", "plan", str(tmp_path / "batch.toml"))
    assert f'name refused, it would leave its folder: ".." is not a plain name under {root}' in (
        output)


def test_a_detail_the_project_writes_is_rendered_in_the_language_of_its_sentence() -> None:
    refused = Text.of("auth_failed", detail=Text.of("no_secret", login="alice"))
    assert refused.fr == "connexion refusée : pas de secret pour alice dans la table des " \
                         "utilisateurs"
    assert refused.en == "login refused: no secret for alice in the users table"


def test_the_connectors_name_their_workloads_in_french_with_the_batch_keyword() -> None:
    code, output = bascule("--lang", "fr", "connectors")
    assert code == 0
    assert ("graph: Microsoft 365 par Microsoft Graph (une application Entra ID)\n"
            "  lit : agendas (calendar), carnets d'adresses (contacts), fichiers (files), "
            "courrier (mail), tâches (tasks)\n") in output
    code, output = bascule("--lang", "en", "connectors")
    assert "  reads: calendar, contacts, files, mail, tasks\n" in output


def test_every_sentence_reads_as_babel_compiled_into_gettext_would_give_it() -> None:
    """The catalogues' own reader (``reports.i18n``) against Babel's reader and compiler
    fed to Python's gettext, for every code, in each language, for counts 0, 1, 2 and 5."""
    import gettext
    import io

    from babel.messages.mofile import write_mo

    from reports.i18n import _template

    english = {entry.context: entry for entry in read_catalogue(LOCALE_DIR / "bascule.pot")
               if entry.context}
    for lang in LANGUAGES:
        if lang == "en":
            reference = gettext.NullTranslations()
        else:
            compiled = io.BytesIO()
            write_mo(compiled, read_catalogue(catalogue_path(lang), lang))
            compiled.seek(0)
            reference = gettext.GNUTranslations(compiled)
        for code, entry in english.items():
            for count in (0, 1, 2, 5):
                expected = (reference.npgettext(code, *entry.id, count) if entry.pluralizable
                            else reference.pgettext(code, entry.id))
                assert _template(code, lang, count) == expected, (code, lang, count)


def test_the_reader_leaves_out_fuzzy_and_empty_translations_and_reads_escapes(tmp_path) -> None:
    from reports.i18n import _entries

    po = tmp_path / "x.po"
    po.write_text('msgid ""\nmsgstr ""\n"Plural-Forms: nplurals=2; plural=(n > 1);\\n"\n\n'
                  '#, fuzzy, python-brace-format\nmsgctxt "a"\nmsgid "A"\nmsgstr "AA"\n\n'
                  'msgctxt "b"\nmsgid ""\n"B \\"quoted\\"\\n"\n"next"\nmsgstr ""\n\n'
                  '#~ msgctxt "old"\n#~ msgid "Old"\n#~ msgstr "Vieux"\n', encoding="utf-8")
    entries = dict(_entries(po, header=True))
    assert entries[""]["msgstr"] == "Plural-Forms: nplurals=2; plural=(n > 1);\n"
    assert entries["a"]["flags"] == " fuzzy, python-brace-format"
    assert entries["b"] == {"msgid": 'B "quoted"\nnext', "msgstr": ""}
    assert "old" not in entries
