"""Caller authentication: ``Authorization: Bearer <client key>`` against configured keys.

Only sha256 digests of client keys are kept. The digest of the presented key is compared
with every stored digest using ``hmac.compare_digest`` and without an early exit, so the
time taken does not depend on which stored key (if any) matches or how much of it does.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from proxy.context import Caller
from proxy.errors import Forbidden, Unauthorized
from proxy.settings import AuthKey, hash_key

# With no keys configured (only allowed on loopback) every caller is this one.
ANONYMOUS = Caller(name="anonymous", admin=True)


class Authenticator:
    def __init__(self, keys: Mapping[str, AuthKey]) -> None:
        self._callers = {
            digest.encode(): Caller(key.name, key.admin, key.default_tolerance)
            for digest, key in keys.items()
        }
        self.open = not self._callers
        self._by_name = {caller.name: caller for caller in self._callers.values()}

    def by_name(self, name: str) -> Caller | None:
        """The configured key called ``name`` as it is now (an ops-page session names its
        key; a key since removed or demoted no longer signs anyone in)."""
        return self._by_name.get(name)

    def authenticate(self, authorization: str | None) -> Caller:
        if self.open:
            return ANONYMOUS
        if not authorization:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Malformed Authorization header: expected 'Bearer <key>'.")
        digest = hash_key(token).encode()
        found: Caller | None = None
        for stored, caller in self._callers.items():
            if hmac.compare_digest(stored, digest):
                found = caller
        if found is None:
            raise Unauthorized("Incorrect API key provided.")
        return found


def require_admin(caller: Caller) -> None:
    if not caller.admin:
        raise Forbidden("This endpoint needs an admin key.")
