"""Who is calling: bearer tokens of the configured OIDC issuers (see :mod:`.oidc`), or the
Basic credentials of the node's local users (see :mod:`.basic`)."""

from .basic import hash_password
from .oidc import Authenticator

__all__ = ["Authenticator", "hash_password"]
