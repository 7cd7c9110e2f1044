"""App-only sign-in to Microsoft Entra ID with msal: credentials, tokens, and errors in plain
words. The tokens are for Microsoft Graph, or for Exchange Online's IMAP (XOAUTH2).

The application signs in as itself (OAuth 2.0 client credentials) with a client secret or a
certificate. msal caches the token and asks for a new one when it nears expiry; the Graph
session asks for a fresh one when Graph refuses a token (``refresh=True``).

TLS is always verified. With ``ca_file`` that CA bundle is the one trusted: requests ignores
``Session.verify`` when the environment sets ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, so
the CA is passed with every request, msal's included.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msal
import requests

from connectors.base import ConnectError

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PUBLIC_AUTHORITY = "https://login.microsoftonline.com"


class TokenProvider(Protocol):
    """Answers a bearer token for Graph; ``refresh`` discards the cached one first."""

    def __call__(self, *, refresh: bool = False) -> str: ...


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate registered on the application: its private key (PEM file, which may
    hold the certificate too) and its SHA-1 thumbprint as Entra ID shows it."""

    key_file: Path
    thumbprint: str


@dataclass(frozen=True)
class GraphCredentials:
    """Who signs in. The secret arrives resolved from its reference (``env:``, ``file:``);
    it is never written in a batch file and never shown."""

    tenant: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    certificate: ClientCertificate | None = None

    def __post_init__(self) -> None:
        if (self.client_secret is None) == (self.certificate is None):
            raise ValueError("give exactly one of client_secret and certificate")


EXPLANATIONS: Mapping[str, tuple[str, str]] = {
    "90002": (("the tenant does not exist: check the tenant ID or domain, and the cloud "
              "(authority) it lives in"),
              ("le tenant n'existe pas : vérifiez l'identifiant ou le domaine du tenant, et le "
              "cloud (autorité) où il se trouve")),
    "900023": ("the tenant name is not valid: give the tenant ID (a GUID) or its domain",
               ("le nom du tenant n'est pas valide : donnez l'identifiant du tenant (un GUID) ou "
               "son domaine")),
    "700016": (("the application (client ID) is not registered in this tenant, or no "
               "administrator has added it there"),
               ("l'application (client ID) n'est pas inscrite dans ce tenant, ou aucun "
               "administrateur ne l'y a ajoutée")),
    "7000215": ("the client secret is wrong: give the secret's value, not its ID",
                "le secret client est faux : donnez la valeur du secret, pas son identifiant"),
    "7000222": ("the client secret has expired: create a new one in the app registration",
                ("le secret client a expiré : créez-en un nouveau dans l'inscription de "
                "l'application")),
    "7000218": ("no secret or certificate was sent", "aucun secret ni certificat n'a été envoyé"),
    "700027": (("the certificate is not the one registered on the application, or its "
               "thumbprint is wrong"),
               ("le certificat n'est pas celui inscrit sur l'application, ou son empreinte est "
               "fausse")),
    "65001": ("an administrator has not granted consent to the application's permissions",
              ("un administrateur n'a pas donné son consentement aux permissions de "
              "l'application")),
    "500011": (("the resource asked for is not in this tenant (for IMAP: Exchange Online; "
                "check the scope and that the tenant has Exchange Online)"),
               ("la ressource demandée n'existe pas dans ce tenant (pour IMAP : Exchange "
                "Online ; vérifiez la portée et que le tenant dispose d'Exchange Online)")),
    "1002012": ("the scope asked for is not valid for app-only access",
                "la portée demandée n'est pas valide pour un accès en tant qu'application"),
}
NO_CONSENT = (("the application has no permission on this data: an administrator must grant "
              "admin consent to its application permissions (Mail.Read, User.Read.All...)"),
              ("l'application n'a pas de permission sur ces données : un administrateur doit "
              "donner son consentement aux permissions d'application (Mail.Read, "
              "User.Read.All...)"))


class GraphAuthError(ConnectError):
    """Sign-in or authorisation refused (code ``auth_failed``), explained for a person.

    ``error_code`` is the identity platform's ``AADSTS`` number or Graph's error code;
    ``message_en`` and ``message_fr`` say what is wrong and what to do.
    """

    def __init__(self, error_code: str, message_en: str, message_fr: str,
                 server_text: str = "") -> None:
        detail = f"{error_code}: {message_en}"
        if server_text:
            detail += f" ({server_text})"
        super().__init__(detail, code="auth_failed")
        self.error_code = error_code
        self.message_en = message_en
        self.message_fr = message_fr


def explain_aadsts(text: str) -> GraphAuthError:
    """A ``GraphAuthError`` for an identity platform answer holding an ``AADSTS`` code."""
    match = re.search(r"AADSTS(\d+)", text)
    number = match.group(1) if match else ""
    english, french = EXPLANATIONS.get(number, ("the identity platform refused the sign-in",
                                                "la plateforme d'identité a refusé la connexion"))
    sentence = re.search(r"AADSTS\d+:.*?(?=\s*Trace ID:|[\"\r\n]|$)", text)
    server_text = sentence.group(0) if sentence else text.splitlines()[0] if text else ""
    return GraphAuthError(f"AADSTS{number}" if number else "AADSTS", english, french, server_text)


def no_consent_error(graph_code: str, graph_message: str) -> GraphAuthError:
    """Graph refused data with 403 although the token is valid: permissions not consented."""
    return GraphAuthError(graph_code, NO_CONSENT[0], NO_CONSENT[1], graph_message)


class VerifyingHttpClient:
    """The http client handed to msal: a pooled ``requests.Session`` that names the CA bundle
    on every request, where the environment cannot override it."""

    def __init__(self, session: requests.Session, ca_file: str | None,
                 timeout: float) -> None:
        self._session = session
        self._verify: str | bool = ca_file or True
        self._timeout = timeout

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._session.get(url, verify=self._verify,
                                 timeout=kwargs.pop("timeout", self._timeout), **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._session.post(url, verify=self._verify,
                                  timeout=kwargs.pop("timeout", self._timeout), **kwargs)

    def close(self) -> None:
        self._session.close()


def transport_error(error: requests.RequestException, where: str) -> ConnectError:
    """TLS and network failures as the engine reports them."""
    if isinstance(error, requests.exceptions.SSLError):
        return ConnectError(f"{where}: {error}", code="tls_failed")
    return ConnectError(f"{where}: {error}", code="unreachable")


class MsalTokenProvider:
    """Tokens for one application in one tenant, cached by msal; thread-safe."""

    def __init__(self, credentials: GraphCredentials, authority: str = PUBLIC_AUTHORITY,
                 ca_file: str | None = None, scope: str = GRAPH_SCOPE,
                 timeout: float = 30.0) -> None:
        self._credentials = credentials
        self._authority = f"{authority.rstrip('/')}/{credentials.tenant}"
        self._http = VerifyingHttpClient(requests.Session(), ca_file, timeout)
        self._scopes = [scope]
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None

    def __repr__(self) -> str:
        return f"MsalTokenProvider(authority={self._authority!r}, client_id=" \
               f"{self._credentials.client_id!r})"

    def _client_credential(self) -> str | dict[str, str]:
        if self._credentials.client_secret is not None:
            return self._credentials.client_secret
        certificate = self._credentials.certificate
        assert certificate is not None
        return {"private_key": certificate.key_file.read_text(),
                "thumbprint": certificate.thumbprint.replace(":", "")}

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            try:
                # Instance discovery would ask login.microsoftonline.com about any other host
                # (national clouds, test servers): the authority is taken as given.
                self._app = msal.ConfidentialClientApplication(
                    self._credentials.client_id,
                    authority=self._authority,
                    client_credential=self._client_credential(),
                    instance_discovery=False,
                    http_client=self._http,
                )
            except requests.RequestException as error:
                raise transport_error(error, self._authority) from None
            except ValueError as error:
                # msal wraps the discovery answer (which holds the AADSTS code) in its own
                # ValueError: read the whole chain.
                causes = [str(error), str(error.__context__ or "")]
                raise explain_aadsts(" ".join(reversed(causes))) from None
        return self._app

    def __call__(self, *, refresh: bool = False) -> str:
        with self._lock:
            app = self._application()
            if refresh:
                cache = app.token_cache
                for token in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                    cache.remove_at(token)
            try:
                result = app.acquire_token_for_client(scopes=self._scopes)
            except requests.RequestException as error:
                raise transport_error(error, self._authority) from None
        if "access_token" not in result:
            raise explain_aadsts(str(result.get("error_description") or result.get("error")))
        return str(result["access_token"])

    def close(self) -> None:
        self._http.close()


def token_provider(credentials: GraphCredentials, authority: str = PUBLIC_AUTHORITY,
                   ca_file: str | None = None, scope: str = GRAPH_SCOPE,
                   timeout: float = 30.0) -> MsalTokenProvider:
    """A token provider for ``credentials`` against ``authority`` (the host, without the
    tenant: ``https://login.microsoftonline.com``, a national cloud's, or a test server's).
    Nothing is sent until the first token is asked for."""
    return MsalTokenProvider(credentials, authority, ca_file, scope, timeout)
