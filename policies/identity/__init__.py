"""Who is calling: bearer tokens of the configured OIDC issuers (see :mod:`.oidc`)."""

from .oidc import Authenticator

__all__ = ["Authenticator"]
