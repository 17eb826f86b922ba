"""The zone in another account: Route 53 clients sign with credentials from STS AssumeRole.

Organisations often keep DNS in a networking account while clusters run in workload
accounts. With ``--assume-role-arn`` (``ECSSD_ASSUME_ROLE_ARN``; ``ASSUME_ROLE_ARN`` for the
Lambdas) every Route 53 client of a process uses that role's credentials; every other
client keeps the process's own, because what they reach lives where the process runs:

- ECS and EC2 (the sweep, the task-events Lambda): the clusters of this account;
- DynamoDB and SQS (the queued mode's table and queue): created by the local stack;
- EventBridge (``--cw-send-events``): the local bus;
- STS itself: called with the process's own credentials, which is what AssumeRole needs.

Which services follow the role is :data:`ZONE_SERVICES`, one place.

The credentials are botocore's :class:`~botocore.credentials.DeferredRefreshableCredentials`
with an AssumeRole fetcher: the first Route 53 request assumes the role (so a process that
never touches Route 53, as the agent in queued mode, never calls STS), and botocore
refreshes them before they expire: 15 minutes before (advisory: a failure then keeps the
current credentials and is retried on the next request) and 10 minutes before (mandatory:
a failure is the request's error). The session lasts the role's default (one hour). An
AssumeRole failure therefore reaches the caller as the error of the Route 53 call it was
made for, a ``ClientError`` like any other AWS error: "unknown", never "gone".

The role session gets its own botocore session (credentials are per session in botocore)
that shares the process's loader, so no service model is loaded twice (see
:mod:`.clients`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import botocore.session
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    Credentials,
    DeferredRefreshableCredentials,
)

from ecssd_agent.config_fields import SettingsError

log = logging.getLogger(__name__)

#: The services whose resources live in the zone's account: only Route 53.
ZONE_SERVICES = frozenset({"route53"})

# IAM's rules: a role ARN in any partition; ExternalId 2-1224 characters of [\w+=,.@:/-];
# RoleSessionName 2-64 characters of [\w+=,.@-].
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
_SESSION_NAME_BAD = re.compile(r"[^\w+=,.@-]")
MAX_SESSION_NAME = 64


@dataclass(frozen=True)
class ZoneRole:
    """The role to assume for Route 53, and how to name the session (CloudTrail shows it)."""

    role_arn: str
    external_id: str = ""
    session_name: str = "ecssd"

    @property
    def account(self) -> str:
        return self.role_arn.split(":")[4]


def zone_role(role_arn: str, external_id: str, session_name: str, *, arn_source: str,
              external_id_source: str) -> ZoneRole | None:
    """The validated role, or None when no role is set; SettingsError names the bad setting.

    ``arn_source`` / ``external_id_source`` are how the caller spells the settings
    (``--assume-role-arn / ECSSD_ASSUME_ROLE_ARN``, or ``ASSUME_ROLE_ARN`` in a Lambda).
    """
    role_arn, external_id = role_arn.strip(), external_id.strip()
    if not role_arn:
        if external_id:
            raise SettingsError(f"{external_id_source} is set but {arn_source} is not: the "
                                "external id is sent when assuming that role")
        return None
    if not _ROLE_ARN.match(role_arn):
        raise SettingsError(f"{arn_source}: {role_arn!r} is not an IAM role ARN "
                            "(arn:aws:iam::<account>:role/<name>)")
    if external_id and not _EXTERNAL_ID.match(external_id):
        raise SettingsError(f"{external_id_source}: must be 2 to 1224 characters of letters, "
                            "digits and +=,.@:/-_")
    name = _SESSION_NAME_BAD.sub("-", session_name)[:MAX_SESSION_NAME]
    return ZoneRole(role_arn, external_id, name if len(name) >= 2 else "ecssd")


def role_credentials(sts: Any, role: ZoneRole,
                     time_fetcher: Callable[[], datetime] | None = None) -> Credentials:
    """Refreshable credentials of ``role``, fetched with ``sts`` on first use.

    ``time_fetcher`` is botocore's clock for deciding when to refresh (tests move it).
    """

    def fetch() -> dict[str, Any]:
        kwargs = {"RoleArn": role.role_arn, "RoleSessionName": role.session_name}
        if role.external_id:
            kwargs["ExternalId"] = role.external_id
        credentials = sts.assume_role(**kwargs)["Credentials"]
        expiration = credentials["Expiration"]
        log.info("assumed %s for Route 53 until %s", role.role_arn, expiration,
                 extra={"role_arn": role.role_arn})
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": expiration.isoformat() if isinstance(expiration, datetime)
            else str(expiration),
        }

    if time_fetcher is None:
        return DeferredRefreshableCredentials(refresh_using=fetch, method="assume-role")
    return DeferredRefreshableCredentials(refresh_using=fetch, method="assume-role",
                                          time_fetcher=time_fetcher)


class _Given(CredentialProvider):
    """A credential chain of one link: the role's refreshable credentials."""

    METHOD = "assume-role"
    CANONICAL_NAME = "custom-ecssd-zone-role"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def role_session(base: boto3.session.Session, credentials: Credentials) -> boto3.session.Session:
    """A boto3 session signing with ``credentials`` and sharing ``base``'s model loader.

    Configuration (endpoints such as AWS_ENDPOINT_URL, retries) still comes from the
    environment and config file, as for ``base``; only the credential chain differs.
    """
    core = botocore.session.Session()
    # boto3 keeps its botocore session in ``_session``; sharing its loader means one copy
    # of each service model (Route 53's is about 10 MB) for both sessions.
    core.register_component("data_loader", base._session.get_component("data_loader"))
    core.register_component("credential_provider", CredentialResolver([_Given(credentials)]))
    return boto3.session.Session(botocore_session=core)
