"""Local mail stores: Maildir++ (source and sink), mbox files and ``.eml`` trees (sources).

These read offline archives and exports, and the Maildir sink writes a store Dovecot or
Courier can serve as is.
"""

from connectors.local.eml import EmlSource
from connectors.local.maildir import INTERNAL_DATE_OFFSET_KEPT, MaildirSink, MaildirSource
from connectors.local.mbox import MboxSource

__all__ = [
    "INTERNAL_DATE_OFFSET_KEPT",
    "EmlSource",
    "MaildirSink",
    "MaildirSource",
    "MboxSource",
]
