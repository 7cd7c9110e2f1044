"""Pieces every connector's batch section is made of: a strict model, secret references,
HTTPS addresses. A section names where a secret is, never the secret."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from mappings.secrets import reference_problem

SECRET_REFERENCE_HINT = 'a reference such as "env:NAME" or "file:path/to/secret"'


class Section(BaseModel):
    """A batch section: unknown keys are errors (a misspelt key must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def refused(code: str, **params: object) -> PydanticCustomError:
    """A value a section refuses, as a catalogue code (``batch_...``) and its parameters:
    the batch's reader says it in the user's language, naming the key."""
    return PydanticCustomError(code, code, params)


def _reference(value: str) -> str:
    if reference_problem(value) is not None:
        raise refused("batch_secret_literal")
    return value


def _https(value: str) -> str:
    if not value.startswith("https://"):
        raise refused("batch_not_https")
    return value.rstrip("/")


SecretReference = Annotated[str, AfterValidator(_reference),
                            Field(description=SECRET_REFERENCE_HINT)]
HttpsAddress = Annotated[str, AfterValidator(_https)]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    return host.lower() in LOOPBACK_HOSTS or host.startswith("127.")


def cleartext_warnings(url: str, side: str) -> list[tuple[str, dict[str, Any]]]:
    """``cleartext_to_network`` for an ``http://`` address other than this machine's."""
    host = urlsplit(url).hostname or ""
    if url.startswith("http://") and not is_loopback(host):
        return [("cleartext_to_network", {"side": side, "host": host})]
    return []


def check_reference(value: str) -> str:
    """A secret reference as written; anything else (a secret) is refused."""
    return _reference(value)
