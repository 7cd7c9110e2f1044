"""IMAP connector: a mail source and a mail sink over imapclient."""

from connectors.imap.session import ImapCredentials, ImapEndpoint, connect
from connectors.imap.source import ImapSource

__all__ = ["ImapCredentials", "ImapEndpoint", "ImapSource", "connect"]
