"""Exchange Server on premises through Exchange Web Services as a source of mail, calendars,
contacts and tasks, and of public folders (``public:`` lines): its batch section and its
registration. exchangelib is imported only when a source opens."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from connectors.base import ConnectError
from connectors.config import HttpsAddress, SecretReference, Section, refused
from connectors.graph.connector import AppCredentials, app_tokens
from connectors.registry import Account, Capabilities, Connector, Context, register
from mappings.calendar import windows_to_iana
from mappings.mailbox_access import EXPORT_COMMAND, SEND_AS_COMMAND, read_access_file
from mappings.spaces import is_public, is_space

if TYPE_CHECKING:
    from connectors.ews.client import EwsClient, SignIn, Throttle
    from connectors.ews.public import PublicTree

EWS_MAX_CONCURRENCY = 27
"""Exchange's default throttling policy: requests in flight per user (EWSMaxConcurrency)."""
PUBLIC_WORKLOADS = frozenset({"mail", "calendar", "contacts", "tasks"})
"""What a public folder line moves: its mail, calendar, contact and task folders."""


class ServiceAccount(Section):
    """One account signing in for every mailbox: with ``impersonation`` (the
    ApplicationImpersonation role) it acts as each of them; without, it needs FullAccess
    over each (a delegate)."""

    login: str = Field(description="The account's login: DOMAIN\\name, or its UPN.")
    secret: SecretReference
    impersonation: bool = Field(
        True, description="Act as each mailbox through ApplicationImpersonation "
        "(New-ManagementRoleAssignment -Role ApplicationImpersonation -User <login>).")


class EwsOAuth(AppCredentials):
    """An Entra ID application's token (hybrid Exchange with OAuth): it impersonates each
    mailbox, as an application must."""

    scope: str = Field(
        "https://outlook.office365.com/.default",
        description="Resource the token is asked for (client credentials: <resource>/.default).")
    ca_file: Path | None = Field(
        None, description="A CA to trust for the sign-in host (test servers, TLS-inspecting "
        "proxies), apart from the Exchange server's. TLS is always verified.")


class EwsEndpointConfig(Section):
    """Exchange Server 2013, 2016, 2019 or Subscription Edition through EWS."""

    type: Literal["ews"]
    service_endpoint: HttpsAddress | None = Field(
        None, description="The EWS address, e.g. https://mail.ville.fr/EWS/Exchange.asmx; "
        "without it, Autodiscover finds it.")
    autodiscover_url: HttpsAddress | None = Field(
        None, description="The Autodiscover address to ask when service_endpoint is not "
        "given, e.g. https://autodiscover.ville.fr/autodiscover/autodiscover.xml; without "
        "it, those of the first user's domain (https://<domain>/autodiscover/... then "
        "https://autodiscover.<domain>/autodiscover/...).")
    auth: Literal["ntlm", "basic", "oauth"] = "ntlm"
    service_account: ServiceAccount | None = Field(
        None, description="One account for every mailbox; without it, each user signs in "
        "with the secret the users table gives.")
    oauth: EwsOAuth | None = None
    ca_file: Path | None = Field(
        None, description="A CA to trust (an internal PKI). TLS is always verified.")
    archive_root: str = Field(
        "Archives", min_length=1,
        description="Target folder the online archive's folders go under.")
    per_mailbox: int = Field(2, ge=1, le=8, description="EWS requests in flight per mailbox.")
    per_server: int = Field(
        12, ge=1, le=EWS_MAX_CONCURRENCY - 1,
        description="EWS requests in flight to the server, under its EWSMaxConcurrency (27 "
        "by default).")
    time_zone: str = Field(
        "Europe/Paris", description="The mailboxes' time zone (IANA name): the days of "
        "tasks are read in it, and a custom zone is matched to it first. EWS gives a "
        "mailbox's zone only through Outlook on the web's private settings.")
    timeout: float = Field(120.0, gt=0, description="Seconds to wait for an answer.")
    max_wait: float = Field(
        900.0, gt=0, description="Seconds one request may wait on a busy server's back-off "
        "before the unit fails (a later run takes it up).")
    access_file: Path | None = Field(
        None, description="FullAccess and SendAs over the mailboxes (Active Directory "
        "permissions, which EWS does not give), as the Exchange Management Shell exports "
        f"them: {EXPORT_COMMAND}; then, for SendAs, appended: {SEND_AS_COMMAND}. Written "
        "with the folder permissions and delegates into the work folder's permissions/.")

    @model_validator(mode="after")
    def _one_sign_in(self) -> EwsEndpointConfig:
        if (self.auth == "oauth") != (self.oauth is not None):
            raise refused("batch_ews_oauth")
        if self.oauth is not None and self.service_account is not None:
            raise refused("batch_ews_oauth")
        if "/" in self.archive_root:
            raise refused("batch_ews_archive_root")
        if windows_to_iana(self.time_zone) != self.time_zone:
            raise refused("batch_ews_time_zone", zone=self.time_zone)
        return self

    def references(self) -> list[str]:
        found = [self.service_account.secret] if self.service_account else []
        return found + (self.oauth.references() if self.oauth else [])


def throttle(context: Context, config: EwsEndpointConfig, endpoint: str) -> Throttle:
    """One throttle per server for the command, whoever signs in."""
    from connectors.ews.client import Throttle

    return context.shared(("ews-throttle", endpoint),
                          lambda: Throttle(config.per_server, config.per_mailbox))


def ews_client(context: Context, config: EwsEndpointConfig, account: Account) -> EwsClient:
    """The client for ``account``'s sign-in: one for every mailbox of a service account or
    an application, one per user otherwise."""
    from connectors.ews.client import EwsClient, SignIn

    ca_file = str(context.path(config.ca_file)) if config.ca_file else None
    common: dict[str, Any] = {"endpoint": config.service_endpoint or "", "auth": config.auth,
                              "ca_file": ca_file, "timeout": config.timeout,
                              "who": _who(config)}
    if config.oauth is not None:
        tokens = app_tokens(context, config.oauth, ca_file=config.oauth.ca_file,
                            scope=config.oauth.scope)
        sign_in, key = SignIn(**common, token=tokens, impersonation=True), "app"
    elif config.service_account is not None:
        service = config.service_account
        sign_in = SignIn(**common, login=service.login, password=context.secret(service.secret),
                         impersonation=service.impersonation)
        key = "service"
    else:
        if not account.secret_ref:
            raise ConnectError(code="no_secret", params={"login": account.login})
        sign_in = SignIn(**common, login=account.login,
                         password=context.secret(account.secret_ref, users_table=True))
        key = account.login.lower()
    if config.service_endpoint is None:
        # A public folder line names no mailbox: Autodiscover is asked about the service
        # account's own address instead.
        address = sign_in.login if is_public(account.login) else account.login
        found = context.shared(("ews-endpoint", config), lambda: _discover(
            config, sign_in, address))
        sign_in = replace(sign_in, endpoint=found, discovered=True)
    return context.shared(("ews", config, key), lambda: EwsClient(
        sign_in, throttle(context, config, sign_in.endpoint), per_server=config.per_server,
        max_wait=config.max_wait))


def _discover(config: EwsEndpointConfig, sign_in: SignIn, address: str) -> str:
    """The EWS address Autodiscover gives for ``address``, asked with the sign-in the
    mailboxes are read with: once per command (every mailbox of an organisation has the
    same)."""
    import requests

    from connectors.ews.autodiscover import candidates, discover

    session = requests.Session()
    if sign_in.token is not None:
        auth: Any = None
    elif config.auth == "ntlm":
        from requests_ntlm import HttpNtlmAuth

        auth = HttpNtlmAuth(sign_in.login, sign_in.password)
    else:
        auth = (sign_in.login, sign_in.password)

    def post(url: str, body: bytes) -> requests.Response:
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        if sign_in.token is not None:
            headers["Authorization"] = f"Bearer {sign_in.token()}"
        return session.post(url, data=body, headers=headers, auth=auth,
                            timeout=sign_in.timeout, allow_redirects=False,
                            verify=sign_in.ca_file or True)

    urls = [config.autodiscover_url] if config.autodiscover_url else candidates(address)
    try:
        return discover(address, urls, post)
    finally:
        session.close()


def _open_public(context: Context, config: EwsEndpointConfig, account: Account,
                 workload: str) -> Any:
    """A ``public:`` line's folders, read by the service account as itself."""
    if config.service_account is None:
        raise ConnectError(code="ews_public_service_account",
                           params={"source": account.login})
    from connectors.ews.public import PublicMailSource, PublicPimSource

    client = ews_client(context, config, account)
    tree = _public_tree(context, config, client)
    if workload == "mail":
        return PublicMailSource(client, account.login, tree, workers=config.per_mailbox)
    return PublicPimSource(client, account.login, tree, user_map=context.target_address,
                           time_zone=config.time_zone)


def _public_tree(context: Context, config: EwsEndpointConfig, client: EwsClient
                 ) -> PublicTree:
    """Every public line of the users table, resolved once per command."""
    from connectors.ews.public import PublicTree

    return context.shared(("ews-public", config), lambda: PublicTree(
        client, context.table_sources()))


def _serves(login: str, workload: str) -> bool:
    """A mailbox's every workload; a ``public:`` line's mail, calendars, contacts and
    tasks; no SharePoint line (``site:``, ``team:``), which are Graph's."""
    if is_public(login):
        return workload in PUBLIC_WORKLOADS
    return not is_space(login)


def _open_source(context: Context, account: Account, workload: str) -> Any:
    config: EwsEndpointConfig = account.config
    if is_public(account.login):
        return _open_public(context, config, account, workload)
    client = ews_client(context, config, account)
    if workload == "mail":
        from connectors.ews.mail import EwsMailSource

        return EwsMailSource(client, account.login, archive_root=config.archive_root,
                             workers=config.per_mailbox)
    from connectors.ews.pim import EwsPimSource

    return EwsPimSource(client, account.login, user_map=context.target_address,
                        time_zone=config.time_zone)


def _open_sharing_source(context: Context, account: Account, workload: str) -> Any:
    from connectors.ews.permissions import EwsMailboxPermissions, EwsPublicPermissions

    config: EwsEndpointConfig = account.config
    if is_public(account.login):
        if config.service_account is None:
            return None
        client = ews_client(context, config, account)
        tree = _public_tree(context, config, client)
        return EwsPublicPermissions(client, lambda: tree.folders(account.login))
    access = context.shared(("ews-access-file", config.access_file), lambda: read_access_file(
        context.path(config.access_file)) if config.access_file else [])
    return EwsMailboxPermissions(ews_client(context, config, account), account.login, access,
                                 archive_root=config.archive_root)


def _check(context: Context, config: EwsEndpointConfig, first_login: str | None) -> None:
    """Read the FullAccess file, whose faults are the batch's; sign in as the service
    account (or the application) acting as the first principal: a refused login or a
    missing impersonation right stops the command, saying what to grant; a first line of
    public folders reads their root as the service account itself. Users signing in with
    their own secrets, and public folder lines without a service account, are each refused
    when their source opens, which stops only them."""
    if config.access_file is not None:
        read_access_file(context.path(config.access_file))
    if first_login is None or (config.service_account is None and config.oauth is None):
        return
    if is_public(first_login) and config.service_account is None:
        return
    from connectors.ews.client import EwsFault
    from connectors.ews.mail import check_access
    from connectors.ews.public import check_public

    client = ews_client(context, config, Account(config, first_login))
    try:
        if is_public(first_login):
            check_public(client)
        else:
            check_access(client, first_login)
    except EwsFault as fault:
        raise ConnectError(fault.detail, code="ews_refused",
                           where=client.sign_in.endpoint) from None


def _who(config: EwsEndpointConfig) -> str:
    """The account that signs in for every mailbox, as the grant names it."""
    if config.service_account is not None:
        return config.service_account.login
    return config.oauth.client_id if config.oauth is not None else ""


def _warnings(config: EwsEndpointConfig, side: str) -> list[tuple[str, dict[str, Any]]]:
    if config.auth == "basic":
        return [("ews_basic_auth", {})]
    return []


register(Connector(
    type="ews", config=EwsEndpointConfig,
    summary=("Exchange Server on premises through EWS (2013, 2016, 2019, SE)",
             "Exchange Server sur site par EWS (2013, 2016, 2019, SE)"),
    reads=frozenset({"mail", "calendar", "contacts", "tasks"}),
    open_source=_open_source,
    open_sharing_source=_open_sharing_source,
    capabilities=Capabilities(delta=True, flag_changes=True),
    example='''service_endpoint = "https://mail.ville.example/EWS/Exchange.asmx"
auth = "ntlm"                 # ntlm | basic | oauth
# ca_file = "ca-interne.pem"  # an internal CA / une AC interne
archive_root = "Archives"     # where the online archive goes / où va l'archive en ligne
# access_file = "full-access.csv"  # FullAccess and SendAs, exported as the README says
# One service account acting as every mailbox (without it: a secret per user in the table).
# Un compte de service agissant pour chaque boîte (sinon : un secret par utilisateur).
# New-ManagementRoleAssignment -Name bascule-impersonation -Role ApplicationImpersonation -User svc-bascule
[source.service_account]
login = "VILLE\\\\svc-bascule"
secret = "env:BASCULE_EWS_SECRET"
impersonation = true
''',
    account_slots=lambda config: config.per_mailbox,
    check=_check,
    serves=_serves,
    warnings=_warnings,
    secret_references=lambda config: config.references(),
))
