"""Microsoft 365 through Microsoft Graph: app-only sign-in with msal and a shared HTTP session."""

from connectors.graph.auth import (
    ClientCertificate,
    GraphAuthError,
    GraphCredentials,
    token_provider,
)
from connectors.graph.session import GraphError, GraphSession

__all__ = ["ClientCertificate", "GraphAuthError", "GraphCredentials", "GraphError",
           "GraphSession", "token_provider"]
