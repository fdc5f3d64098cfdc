"""HTTP Basic credentials of the node's local users (``auth.basic``), verified into an
:class:`Identity` of the same kind the OIDC path gives: owner ``basic:<name>``, the configured
groups.

The hashes are argon2 (argon2-cffi) or bcrypt (the ``bcrypt`` package); this module only parses
the header, picks the user and reports every failure as ``Unauthenticated`` (401) without saying
whether the user exists: an unknown name is verified against a dummy hash of the same cost, so
the answer takes as long as for a wrong password.

Verifying is deliberately slow (argon2 with the default parameters takes ~100 ms of CPU), so it
runs in a worker thread (the ASGI layer calls :meth:`Authenticator.authenticate` there) and
successful verifications are remembered for ``CACHE_TTL`` seconds in a bounded LRU, keyed by an
HMAC of the credentials under a key made at start-up (neither the password nor a plain hash of it
is kept). Failures are never remembered, so wrong passwords cannot grow memory, and at most
one verification per core (at least two) runs at once.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Collection

import argon2
import bcrypt

from ..config import BASIC_ISSUER, BasicAuthConfig, BasicUserConfig
from ..errors import Unauthenticated
from ..identity import Identity, memberships

CACHE_TTL = 60.0  # seconds a verified header is trusted without verifying it again
CACHE_SIZE = 1024  # headers remembered at most (least recently used go first)
MAX_CREDENTIALS_LENGTH = 4096  # base64 characters; refuses garbage before decoding it
BCRYPT_MAX_PASSWORD = 72  # bytes bcrypt reads; longer passwords never match (bcrypt 5 refuses them)

_HASHER = argon2.PasswordHasher()  # argon2-cffi's defaults: argon2id, RFC 9106 "low memory"


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` that ``auth.basic.users[].password_hash`` accepts."""
    return _HASHER.hash(password)


def hash_password_command() -> int:
    """``ebroker hash-password``: the password from standard input (its first line) or, at a
    terminal, asked for twice without echo; prints its argon2id hash."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("ebroker: hash-password: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        print("ebroker: hash-password: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def _verify(password_hash: str, password: bytes) -> bool:
    """Whether ``password`` matches ``password_hash``; any odd input is simply no match."""
    if password_hash.startswith("$argon2"):
        try:
            return argon2.PasswordHasher().verify(password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    if len(password) > BCRYPT_MAX_PASSWORD:
        # bcrypt ignores (bcrypt 5: refuses) what is past 72 bytes; spend the time all the same
        bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], password_hash.encode())
        return False
    try:
        return bcrypt.checkpw(password, password_hash.encode())
    except ValueError:
        return False


def _dummy_hash(users: list[BasicUserConfig]) -> str:
    """A hash of a random password, made like the first user's (argon2 with its parameters, or
    bcrypt with its cost), for unknown names to be verified against."""
    secret = os.urandom(16).hex()
    first = users[0].password_hash
    if first.startswith("$argon2"):
        p = argon2.extract_parameters(first)
        hasher = argon2.PasswordHasher(
            time_cost=p.time_cost, memory_cost=p.memory_cost, parallelism=p.parallelism,
            hash_len=p.hash_len, salt_len=p.salt_len, type=p.type,
        )  # fmt: skip
        return hasher.hash(secret)
    rounds = int(first.split("$")[2])
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds, prefix=b"2b")).decode()


def _refused(detail: str) -> Unauthenticated:
    # no RFC 6750 error code: it is about bearer tokens, and none was sent
    return Unauthenticated(detail, error=None)


def _credentials(encoded: str) -> tuple[str, bytes]:
    """The user name and password in the base64 part of a Basic header (RFC 7617)."""
    if not encoded or len(encoded) > MAX_CREDENTIALS_LENGTH:
        raise _refused("malformed Basic credentials: expected 'Basic <base64 of name:password>'")
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _refused("malformed Basic credentials: not base64") from None
    name, colon, password = decoded.partition(b":")
    if not colon:
        raise _refused("malformed Basic credentials: no ':' between user name and password")
    try:
        return name.decode("utf-8"), password
    except UnicodeDecodeError:
        raise _refused("malformed Basic credentials: the user name is not UTF-8") from None


class BasicUsers:
    """The configured Basic users; safe to call from many threads at once."""

    def __init__(self, config: BasicAuthConfig, *, cache_ttl: float = CACHE_TTL,
                 cache_size: int = CACHE_SIZE, issuers: Collection[str] = ()) -> None:  # fmt: skip
        self.config = config
        self._issuers = frozenset(issuers) | {BASIC_ISSUER}  # what qualifies a group name
        self._users = {u.name: u for u in config.users}
        self._dummy = _dummy_hash(config.users) if config.users else ""
        self._ttl = cache_ttl
        self._size = cache_size
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, tuple[float, Identity]] = OrderedDict()
        # argon2 with the default parameters takes 64 MiB per verification: a flood of wrong
        # passwords queues here instead of taking a thread pool's worth of memory and cores
        self._slots = threading.BoundedSemaphore(max(2, os.cpu_count() or 1))
        self.verifications = 0  # hashes verified (a cache hit verifies none); for tests and benches

    def _cache_key(self, encoded: str) -> bytes:
        return hmac.new(self._key, encoded.encode("latin-1", "replace"), hashlib.sha256).digest()

    def cached(self, encoded: str) -> Identity | None:
        """The identity of credentials verified less than ``cache_ttl`` ago; never verifies."""
        return self._cached(self._cache_key(encoded))

    def _cached(self, key: bytes) -> Identity | None:
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry[1]

    def authenticate(self, encoded: str) -> Identity:
        """The identity of the base64 credentials of a Basic header; raises Unauthenticated."""
        key = self._cache_key(encoded)
        found = self._cached(key)
        if found is not None:
            return found
        name, password = _credentials(encoded)
        user = self._users.get(name)
        with self._lock:
            self.verifications += 1
        # an unknown name costs as much as a wrong password: nothing tells which users exist
        with self._slots:
            matched = _verify(user.password_hash if user else self._dummy, password)
        if user is None or not matched:
            raise _refused("wrong user name or password")
        groups = frozenset(user.groups)
        found = Identity(subject=user.name, groups=groups, issuer=BASIC_ISSUER,
                         claims={"auth": "basic"},
                         memberships=memberships(BASIC_ISSUER, groups, self._issuers))  # fmt: skip
        with self._lock:
            self._cache[key] = (time.monotonic() + self._ttl, found)
            self._cache.move_to_end(key)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return found


__all__ = ["BasicUsers", "hash_password", "hash_password_command"]
