"""The TLS context of a connector's HTTPS pool: the batch's CA bundle alone, loaded once."""

from __future__ import annotations

import os
from typing import Any

from urllib3.util.ssl_ import create_urllib3_context


def verified_context(ca_bundle: str) -> Any:
    """One TLS context trusting the CA bundle (a file, or a folder of hashed certificates)
    and verifying the server's name, loaded once: requests would read the bundle from disk
    again for every request, and take ``REQUESTS_CA_BUNDLE`` from the environment over it."""
    context = create_urllib3_context()
    if os.path.isdir(ca_bundle):
        context.load_verify_locations(capath=ca_bundle)
    else:
        context.load_verify_locations(cafile=ca_bundle)
    return context
