"""TLS for ``streamvox serve``: some SDKs speak only ``wss://`` and ``https://``."""

from __future__ import annotations

import ssl
from pathlib import Path


class TLSConfigError(ValueError):
    """The certificate or key cannot be used."""


def server_ssl_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the PEM certificate chain ``cert`` and its private ``key``."""
    for name, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise TLSConfigError(f"TLS {name} {path} is not a file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot load TLS certificate {cert} with key {key}: {exc}") from None
    return context
