"""Authentication: who is calling, from bearer tokens of the configured OIDC issuers (see
:mod:`.oidc`) or the Basic credentials of the node's local users (see :mod:`.basic`), verified
into a :class:`broker_core.identity.Identity` before anything else reads the request.

Authentication is not an admission policy: policies (``policies/``) only read the identity made
here, and decide what it may do.
"""

from .basic import hash_password
from .oidc import Authenticator

__all__ = ["Authenticator", "hash_password"]
