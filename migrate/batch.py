"""The batch file: what to move, from where, to where. TOML, validated by pydantic."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors import registry
from connectors.config import SECRET_REFERENCE_HINT, Section, check_reference, refused
from connectors.registry import DOCUMENT_WORKLOADS, WORKLOADS
from mappings.secrets import resolve_secret, secret_warning
from reports.i18n import Text


class MappingConfig(Section):
    users: Path = Field(
        Path("users.csv"), description="CSV with columns source,target,source_secret,target_secret."
    )
    sharing: bool = Field(
        True, description="After each run, who may see each space's files at the source, as "
        "one CSV per space in the work folder's sharing/ (one Graph request per file and "
        "folder), and who may open each mailbox and its folders, as one CSV per mailbox in "
        "its permissions/ (sources that can say: Exchange through EWS)."
    )


class MailConfig(Section):
    exclude: list[str] = Field(
        default_factory=list, description='Folder patterns to leave out, e.g. "Sync Issues*".'
    )
    renames: dict[str, str] = Field(
        default_factory=dict, description='Source folder -> target folder, e.g. "Old" = "Archives/Old".'
    )
    include_non_mail: bool = Field(
        False, description="Also copy Calendar, Contacts, Tasks... folders Exchange shows over IMAP."
    )


class DocumentsConfig(Section):
    """The former way of saying where calendars, contacts and files go: still read, as a
    ``folder`` target for each of them, with a notice showing the new form."""

    path: Path = Field(
        Path("documents"),
        description="Former form of [targets.<workload>] type = \"folder\": local folder "
        "receiving calendars, contacts and files, one sub-folder per target user and workload.",
    )


class RunConfig(Section):
    work_dir: Path = Field(
        Path("bascule-work"), description="Ledger and reports; relative to the batch file."
    )
    workers: int = Field(
        8, ge=1, le=64,
        description="Work units running at once, over every account. 8 was the fastest for "
        "100 small mailboxes on 2 cores (docs/benchmarks.md); bascule's CPU bounds it beyond.")
    ledger: str | None = Field(
        None, description="SQLAlchemy URL of the ledger, without its password; default: "
        "SQLite in work_dir."
    )
    ledger_secret: str | None = Field(
        None, description="The ledger database's password: " + SECRET_REFERENCE_HINT + "."
    )
    on_conflict: Literal["keep_both", "skip", "overwrite"] = Field(
        "keep_both", description="A calendar object, contact or file someone else changed or "
        "put on the target where bascule writes: keep_both (bascule's copy beside it, its name "
        "followed by ~ and a hash), skip (left, the item counted failed) or overwrite. Each "
        "case is a line in the report."
    )
    deletions: Literal["report", "remove"] = Field(
        "report", description="Messages, calendar objects, contacts and files deleted at the "
        "source since the last pass: report (left on the target and counted) or remove "
        "(deleted from the target, unless someone changed them there since: a message read, "
        "flagged, answered or labelled there stays)."
    )

    @field_validator("ledger")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            address = make_url(value)
        except ArgumentError as error:
            raise refused("batch_ledger_url", detail=str(error)) from None
        if address.password:
            raise refused("batch_ledger_password")
        return value

    @field_validator("ledger_secret")
    @classmethod
    def _ledger_secret_reference(cls, value: str | None) -> str | None:
        return None if value is None else check_reference(value)


class Batch(Section):
    """A batch as every command reads it. Its ``source``, ``target`` and ``targets`` are
    sections of registered connectors: ``load_batch`` validates them with the model the
    registry gives (``batch_model``), so ``source.type`` picks the section's model."""

    name: str = Field(pattern=r"^[\w.-]+$", description="Short name of the batch, e.g. lot-1.")
    source: Any = Field(description="Where everything comes from: one registered source.")
    target: Any = Field(
        None, description="Where mail goes; needed by plan, run and verify, not by audit."
    )
    targets: Any = Field(
        None, description="Where each other workload goes: [targets.calendar], "
        "[targets.contacts], [targets.tasks], [targets.files], each a registered sink of that "
        "workload."
    )
    mapping: MappingConfig = MappingConfig()
    workloads: list[Literal[WORKLOADS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["mail"],
        description="What to move: mail, calendar, contacts, tasks, files (the source must read "
        "them).",
    )
    mail: MailConfig = MailConfig()
    documents: DocumentsConfig | None = Field(
        None, description="Former form of [targets.<workload>] (a local folder): still read.")
    run: RunConfig = RunConfig()
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        """The batch file's folder: relative paths in the batch start there."""
        return self._base_dir

    @model_validator(mode="after")
    def _workloads_read(self) -> Batch:
        reads = registry.connector(self.source.type).reads
        unread = [w for w in self.workloads if w not in reads]
        if unread:
            able = ", ".join(c.type for c in registry.sources() if set(unread) <= c.reads)
            raise refused("batch_workloads_unread", workloads=", ".join(unread),
                          type=self.source.type, able=able or "-")
        return self

    def target_of(self, workload: str) -> Any:
        """The section of the sink a workload goes to, or ``None`` when the batch names
        none. Calendars, contacts and files named nowhere go to the former ``[documents]``
        folder (``documents`` by default), as before the per-workload targets."""
        if workload == MAIL:
            return self.target
        named = getattr(self.targets, workload, None) if self.targets is not None else None
        if named is not None:
            return named
        from connectors.local.connector import FolderConfig

        path = self.documents.path if self.documents is not None else DocumentsConfig().path
        return FolderConfig(type="folder", path=path)

    def legacy_documents(self) -> list[str]:
        """The document workloads that go to the former ``[documents]`` folder."""
        return [w for w in self.workloads if w != MAIL
                and (self.targets is None or getattr(self.targets, w, None) is None)]

    def resolve(self, path: Path) -> Path:
        """A path from the batch, relative to the batch file's folder."""
        return path if path.is_absolute() else self.base_dir / path

    def ledger_password(self) -> str | None:
        """The ledger database's password, read from its reference (``SecretError``)."""
        if self.run.ledger_secret is None:
            return None
        return resolve_secret(self.run.ledger_secret, base_dir=self.base_dir)

    @property
    def work_dir(self) -> Path:
        return self.resolve(self.run.work_dir)


MAIL = "mail"
SIDES = {"source": "side_source", "target": "side_target"}
"""A connector's warnings name their side; the sentence inserted for each."""


def _union(configs: list[type[BaseModel]]) -> Any:
    """One section among several, told apart by ``type``."""
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[tuple(configs)], Field(discriminator="type")]  # noqa: UP007


_models: dict[int, type[Batch]] = {}


def batch_model() -> type[Batch]:
    """The batch's model for the connectors registered now (rebuilt when they change)."""
    generation = registry.generation()
    model = _models.get(generation)
    if model is None:
        targets = create_model(
            "Targets", __base__=Section, __doc__="Where each workload other than mail goes.",
            **{w: (_union([c.config for c in registry.sinks(w)]) | None,
                   Field(None, description=f"The sink {w} goes to."))
               for w in DOCUMENT_WORKLOADS if registry.sinks(w)})
        model = create_model(
            "Batch", __base__=Batch,
            source=(_union([c.config for c in registry.sources()]),
                    Field(description="Where everything comes from: one registered source.")),
            target=(_union([c.config for c in registry.sinks(MAIL)]) | None,
                    Field(None, description="Where mail goes; needed by plan, run and verify, "
                          "not by audit.")),
            targets=(targets | None, Field(None, description="Where calendars, contacts, tasks "
                                           "and files go, each to a sink of that workload.")),
        )
        _models.clear()
        _models[generation] = model
    return model


def target_refusals(batch: Batch) -> list[Text]:
    """Why a target cannot take a workload as the batch asks (a calendar server that would
    mail every attendee): each connector says it of its own section."""
    refusals = []
    for workload in batch.workloads:
        config = batch.target_of(workload)
        if config is not None:
            refusals += [Text.of(code, workload=workload, **params) for code, params
                         in registry.connector(config.type).refusals(config, workload)]
    return refusals


def target_advice(batch: Batch, workload: str) -> tuple[int, str] | None:
    """The most items of ``workload`` one container should hold on its target, and whose
    figure it is, when the target's connector knows one."""
    config = batch.target_of(workload)
    return None if config is None else registry.connector(config.type).advised_items(
        config, workload)


def unknown_target_logins(batch: Batch, targets: set[str]) -> list[Text]:
    """A login a target section names (``acl_mailboxes``...) that is none of ``targets``
    (the users table's target column): the setting would apply to nobody."""
    known = {target.casefold() for target in targets}
    unknown: dict[tuple[str, str], None] = {}
    for workload in dict.fromkeys([MAIL, *batch.workloads]):
        config = batch.target_of(workload)
        if config is None:
            continue
        for key, login in registry.connector(config.type).target_logins(config):
            if login.casefold() not in known:
                unknown[(key, login)] = None
    return [Text.of("batch_login_not_in_users", key=key, login=login)
            for key, login in unknown]


def batch_warnings(batch: Batch) -> list[Text]:
    """What in the batch works but deserves a word: what a connector says of its section
    (mail in clear over a network), secrets or private keys that other users of the machine
    may read, and the former ``[documents]`` form."""
    warnings = []
    sides = [("source", batch.source)] + [
        ("target", batch.target_of(w)) for w in dict.fromkeys([MAIL, *batch.workloads])]
    seen: list[Any] = []
    references = [batch.run.ledger_secret]
    for side, config in sides:
        if config is None or any(config is other for other in seen):
            continue
        seen.append(config)
        connector = registry.connector(config.type)
        for code, params in connector.warnings(config, side):
            shown = dict(params)
            if "side" in shown:
                shown["side"] = Text.of(SIDES[shown["side"]])
            warnings.append(Text.of(code, **shown))
        references += connector.secret_references(config)
    for reference in dict.fromkeys(filter(None, references)):
        warning = secret_warning(reference, base_dir=batch.base_dir)
        if warning is not None:
            warnings.append(Text.of(warning.code, **warning.params))
    legacy = batch.legacy_documents()
    if legacy:
        path = batch.target_of(legacy[0]).path
        warnings.append(Text.of("documents_former_form", workloads=", ".join(legacy),
                                example="\n".join(f'[targets.{w}]\ntype = "folder"\n'
                                                  f'path = "{path}"' for w in legacy)))
    return warnings


class BatchError(Exception):
    """A batch file that cannot be used; ``problems`` lists each one, in both languages."""

    def __init__(self, path: Path, problems: list[Text]) -> None:
        super().__init__(f"{path}: " + "; ".join(p.en for p in problems))
        self.path = path
        self.problems = problems


def load_batch(path: Path) -> Batch:
    """Read and validate a batch file; raise ``BatchError`` naming the file and each key."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise BatchError(path, [Text.of("batch_unreadable", reason=error.strerror or str(error))])
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BatchError(path, [Text.of("batch_not_toml", reason=str(error))])
    try:
        batch = batch_model().model_validate(data)
    except ValidationError as error:
        raise BatchError(path, [_explain(e) for e in error.errors()])
    batch._base_dir = path.resolve().parent
    return batch


def _explain(error: dict) -> Text:
    types = {c.type for c in registry.connectors()}
    shown = [str(part) for part in error["loc"]
             if str(part) not in types and not str(part).startswith(("function-", "Annotated"))]
    location = ".".join(shown)
    kind = error["type"]
    if kind == "missing":
        return Text.of("batch_key_missing", key=location)
    if kind == "extra_forbidden":
        return Text.of("batch_key_unknown", key=location)
    if kind == "literal_error" and shown[-1:] == ["type"]:
        kind, shown = "union_tag_invalid", shown[:-1]  # a section of one possible type
        location = ".".join(shown)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return Text.of("batch_bad_type", key=location,
                       expected=", ".join(c.type for c in _connectors_at(shown)))
    params = dict(error.get("ctx") or {})
    if kind.startswith("batch_"):
        return Text.of(kind, key=location, **params)
    code = PYDANTIC_CODES.get(kind)
    if code is not None:
        limit = next((params[k] for k in ("ge", "le", "gt", "lt") if k in params), "")
        expected = str(params.get("expected", "")).replace(" or ", ", ")  # "'a', 'b' or 'c'"
        return Text.of(code, key=location, limit=limit, expected=expected)
    return Text.of("batch_bad_value", key=location, expected=error["msg"])


PYDANTIC_CODES = {
    "int_parsing": "batch_value_int", "int_type": "batch_value_int",
    "int_from_float": "batch_value_int", "float_parsing": "batch_value_number",
    "float_type": "batch_value_number", "greater_than_equal": "batch_value_at_least",
    "less_than_equal": "batch_value_at_most", "greater_than": "batch_value_more_than",
    "string_type": "batch_value_text", "bool_parsing": "batch_value_bool",
    "bool_type": "batch_value_bool", "list_type": "batch_value_list",
    "string_pattern_mismatch": "batch_value_pattern", "literal_error": "batch_value_one_of",
    "model_type": "batch_value_section", "model_attributes_type": "batch_value_section",
}
"""pydantic's error types, as the catalogue's codes: said in the user's language."""


def _connectors_at(location: list[str]) -> list[registry.Connector]:
    """The connectors a section may name: sources for ``source``, the sinks of a workload
    for ``target`` (mail) and ``targets.<workload>``."""
    if location[:1] == ["source"]:
        return registry.sources()
    if location[:1] == ["targets"] and len(location) > 1:
        return registry.sinks(location[1])
    return registry.sinks(MAIL)


def json_schema() -> str:
    return json.dumps(batch_model().model_json_schema(), indent=2, ensure_ascii=False)


def example_batch(source: str = "imap", target: str = "imap") -> str:
    """The batch ``bascule init`` writes: each section from its connector's example, the
    other types each side may name, and the per-workload targets commented out."""
    def section(header: str, kind: str, commented: bool = False) -> str:
        lines = [f"{header}\ntype = \"{kind}\"", registry.connector(kind).example.replace(
            "<side>", header.strip("[]")).rstrip("\n")]
        text = "\n".join(lines)
        return "\n".join("# " + line if commented else line for line in text.splitlines())

    kinds = " | ".join(c.type for c in registry.sources())
    mail_sinks = " | ".join(c.type for c in registry.sinks(MAIL))
    documents = [(w, registry.sinks(w)) for w in DOCUMENT_WORKLOADS if registry.sinks(w)]
    targets = "\n".join(
        f"# {w}: {' | '.join(c.type for c in sinks)}\n"
        + section(f"[targets.{w}]", sinks[0].type, commented=True) for w, sinks in documents)
    return f"""\
# bascule batch file / fichier de lot bascule
# Every secret is a reference: env:NAME (environment variable) or file:PATH (a file
# readable by the migration account only). Never write a password here.
# Chaque secret est une référence : env:NOM ou file:CHEMIN. Jamais de mot de passe ici.
# `bascule connectors` lists every type / liste tous les types.

name = "lot-1"
workloads = ["mail"]          # mail, calendar, contacts, tasks, files (the source must read them)

# source types: {kinds}
{section("[source]", source)}

# Where mail goes / où va le courrier. Types: {mail_sinks}
{section("[target]", target)}

# Where calendars, contacts, tasks and files go / où vont agendas, contacts, tâches et fichiers:
{targets}

[mapping]
users = "users.csv"           # source,target,source_secret,target_secret
# a space's source / la source d'un espace : site:<site>, site:<site>/<library>, team:<team>,
# public:\\<public folder>\\<sub-folder> (Exchange on premises / Exchange sur site)

[mail]
exclude = ["Sync Issues*"]
# renames = {{ "Ancien/Projets" = "Archives/Projets" }}
# include_non_mail = false    # Calendar, Contacts, Tasks folders seen over IMAP

[run]
work_dir = "bascule-work"     # ledger and reports / registre et rapports
workers = 8                   # units at once / unités en parallèle
"""


EXAMPLE_USERS = """\
source,target,source_secret,target_secret
alice@ville.example,alice,env:ALICE_SOURCE_SECRET,env:ALICE_TARGET_SECRET
"""
