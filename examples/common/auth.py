"""HTTP basic auth for the example services, with credentials taken from the environment.

Why from the environment: an ECS task definition (or ``docker run -e``) is where an operator
sets them, and Secrets Manager / SSM parameters land there too. The password is compared in
constant time and is never logged or echoed; a request with bad credentials learns nothing
beyond "401".
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

USER_VAR = "AUTH_USER"
PASSWORD_VAR = "AUTH_PASSWORD"
DISABLED_VAR = "AUTH_DISABLED"
_TRUE = {"1", "true", "yes", "on"}


class AuthConfigError(ValueError):
    """The environment asks for auth but does not say with which credentials."""


@dataclass(frozen=True)
class Credentials:
    """A user and password; ``repr`` hides the password so it cannot leak into a log."""

    user: str
    password: str = field(repr=False)

    def header(self) -> str:
        """The ``Authorization`` header value a client sends."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """``AUTH_USER``/``AUTH_PASSWORD``; None when both are unset (the caller decides what that means)."""
    env = os.environ if environ is None else environ
    user, password = env.get(USER_VAR, ""), env.get(PASSWORD_VAR, "")
    if not user and not password:
        return None
    if not user or not password or ":" in user:
        raise AuthConfigError(f"set both {USER_VAR} (without ':') and {PASSWORD_VAR}")
    return Credentials(user, password)


@dataclass(frozen=True)
class BasicAuth:
    """Checks an ``Authorization`` header against one set of credentials."""

    credentials: Credentials
    realm: str = "ecssd example"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BasicAuth | None:
        """The service's auth, or None only when ``AUTH_DISABLED`` is true.

        Failing closed: a service started without credentials refuses to start rather than
        silently serving everyone.
        """
        env = os.environ if environ is None else environ
        if env.get(DISABLED_VAR, "").strip().lower() in _TRUE:
            return None
        creds = credentials_from_env(env)
        if creds is None:
            raise AuthConfigError(
                f"basic auth needs {USER_VAR} and {PASSWORD_VAR} (or {DISABLED_VAR}=true)"
            )
        return cls(creds)

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` header value for a 401."""
        return f'Basic realm="{self.realm}", charset="UTF-8"'

    def allows(self, header: str | None) -> bool:
        """True when ``header`` carries exactly our credentials (constant-time comparison)."""
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic" or not token:
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        if not sep:
            return False
        # Both comparisons always run, so timing does not tell which part was wrong.
        user_ok = hmac.compare_digest(user, self.credentials.user.encode())
        password_ok = hmac.compare_digest(password, self.credentials.password.encode())
        return user_ok and password_ok
