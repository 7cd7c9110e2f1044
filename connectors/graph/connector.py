"""Microsoft 365 through Microsoft Graph as a source of mail, calendars, contacts, tasks and files:
its batch section and its registration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from connectors.config import HttpsAddress, SecretReference, Section, refused
from connectors.registry import Account, Capabilities, Connector, Context, register
from mappings.spaces import is_public, is_space

if TYPE_CHECKING:
    from connectors.graph.auth import MsalTokenProvider
    from connectors.graph.session import GraphSession

class AppCredentials(Section):
    """An application registered in the tenant's Entra ID, signing in as itself (OAuth 2.0
    client credentials) with a client secret or a certificate."""

    tenant: str = Field(description="Tenant id or primary domain, e.g. ville.onmicrosoft.com.")
    client_id: str = Field(description="Application (client) id of the registered app.")
    client_secret: SecretReference | None = None
    certificate: Path | None = Field(
        None, description="PEM file holding the app certificate's private key."
    )
    certificate_thumbprint: str | None = Field(
        None, description="SHA-1 thumbprint of that certificate, as Entra ID shows it."
    )
    authority: HttpsAddress = Field(
        "https://login.microsoftonline.com",
        description="Sign-in host (national clouds: login.microsoftonline.us, "
        "login.partner.microsoftonline.cn...).",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> AppCredentials:
        if (self.client_secret is None) == (self.certificate is None):
            raise refused("batch_one_credential")
        if self.certificate is not None and not self.certificate_thumbprint:
            raise refused("batch_thumbprint_needed")
        return self

    def references(self) -> list[str]:
        """Its secret and its key file, as references to check for loose permissions."""
        found = [self.client_secret] if self.client_secret else []
        return found + ([f"file:{self.certificate}"] if self.certificate else [])


class GraphEndpointConfig(AppCredentials):
    """Microsoft 365 through Microsoft Graph, signed in as an application (client
    credentials) registered in the tenant's Entra ID."""

    type: Literal["graph"]
    graph_url: HttpsAddress = Field("https://graph.microsoft.com", description="Graph endpoint.")
    ca_file: Path | None = Field(
        None, description="A CA to trust (test servers, TLS-inspecting proxies). TLS is "
        "always verified."
    )
    per_mailbox: int = Field(
        4, ge=1, le=16, description="Concurrent Graph requests per mailbox (Outlook allows 4)."
    )

    @field_validator("graph_url")
    @classmethod
    def _version(cls, value: str) -> str:
        return value if value.endswith(("/v1.0", "/beta")) else value + "/v1.0"


def app_tokens(context: Context, config: AppCredentials, *, ca_file: Path | None,
               scope: str | None = None) -> MsalTokenProvider:
    """The application's tokens, one msal cache per application and scope for the whole
    command: a run asks the sign-in service once an hour, not once per mailbox."""
    from connectors.graph.auth import (
        GRAPH_SCOPE,
        ClientCertificate,
        GraphCredentials,
        token_provider,
    )

    def make() -> MsalTokenProvider:
        credentials = GraphCredentials(
            tenant=config.tenant, client_id=config.client_id,
            client_secret=context.secret(config.client_secret) if config.client_secret else None,
            certificate=ClientCertificate(context.path(config.certificate),
                                          config.certificate_thumbprint or "")
            if config.certificate else None,
        )
        return token_provider(credentials, authority=config.authority,
                              ca_file=str(context.path(ca_file)) if ca_file else None,
                              scope=scope or GRAPH_SCOPE)

    return context.shared(("app-tokens", config, scope), make)


def graph_session(context: Context, config: GraphEndpointConfig) -> GraphSession:
    """One session for every principal: one connection pool, one token, and per-mailbox
    caps that hold across work units."""
    from connectors.graph.session import GraphSession

    def make() -> GraphSession:
        ca_file = str(context.path(config.ca_file)) if config.ca_file else None
        return GraphSession(config.graph_url, app_tokens(context, config, ca_file=config.ca_file),
                            ca_file=ca_file, per_mailbox=config.per_mailbox)

    return context.shared(("graph", config), make)


def _open_source(context: Context, account: Account, workload: str) -> Any:
    session = graph_session(context, account.config)
    if workload == "mail":
        from connectors.graph.mail import GraphMailSource

        return GraphMailSource(session, account.login)
    if workload == "files":
        from connectors.graph.files import GraphFileSource
        from connectors.graph.spaces import GraphSpaceFiles, SpaceDirectory

        if is_space(account.login):
            directory = context.shared(("graph-spaces", account.config), lambda: SpaceDirectory(
                session, context.table_sources()))
            return GraphSpaceFiles(session, account.login, directory)
        return GraphFileSource(session, account.login)
    from connectors.graph.pim import GraphPimSource

    return GraphPimSource(session, account.login, user_map=context.target_address)


def _check(context: Context, config: GraphEndpointConfig, first_login: str | None) -> None:
    if first_login is None:
        return
    from connectors.graph.mail import check_access

    check_access(graph_session(context, config), first_login)


def _serves(login: str, workload: str) -> bool:
    """A user's every workload, a site's or a Team's files; an Exchange public folder's
    line (``public:``) is an EWS source's, nothing of Graph's."""
    if is_public(login):
        return False
    return workload == "files" or not is_space(login)


register(Connector(
    type="graph", config=GraphEndpointConfig,
    summary=("Microsoft 365 through Microsoft Graph (an Entra ID application)",
             "Microsoft 365 par Microsoft Graph (une application Entra ID)"),
    reads=frozenset({"mail", "calendar", "contacts", "tasks", "files"}),
    open_source=_open_source,
    capabilities=Capabilities(delta=True, flag_changes=True),
    example='''tenant = "ville.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret = "env:BASCULE_GRAPH_SECRET"   # or certificate + certificate_thumbprint
''',
    check=_check,
    serves=_serves,
    secret_references=lambda config: config.references(),
))
