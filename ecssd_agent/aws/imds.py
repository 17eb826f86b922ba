"""EC2 instance metadata with IMDSv2 (a session token first): the host's name, IP and region, and
whether the instance is going away (its Auto Scaling target lifecycle state, a spot
interruption notice).

The endpoint is a setting (``--imds-endpoint``, else ``AWS_EC2_METADATA_SERVICE_ENDPOINT``)
so tests point it at a fake server on 127.0.0.1; ``AWS_EC2_METADATA_DISABLED=true`` makes
every lookup fail fast with a message telling the operator which options to pass instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import requests

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600


class MetadataUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class InstanceMetadata:
    hostname: str
    ip: str
    region: str
    instance_id: str


def endpoint_from_env() -> str:
    return os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", DEFAULT_ENDPOINT)


class Imds:
    def __init__(self, endpoint: str | None = None, timeout: float = 2.0) -> None:
        self.endpoint = (endpoint or endpoint_from_env()).rstrip("/")
        self.timeout = timeout
        self._token: str | None = None

    def _disabled(self) -> bool:
        return os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"

    def token(self) -> str:
        if self._token is None:
            response = requests.put(
                f"{self.endpoint}/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
                timeout=self.timeout,
            )
            response.raise_for_status()
            self._token = response.text.strip()
        return self._token

    def get(self, path: str) -> str:
        found = self.find(path)
        if found is None:
            raise MetadataUnavailable(f"instance metadata {path} from {self.endpoint}: "
                                      "not found (404)")
        return found

    def find(self, path: str) -> str | None:
        """The item at ``path``, or None when IMDS answers 404 (the item does not exist, as
        ``spot/instance-action`` without a notice). Raises :class:`MetadataUnavailable` when
        IMDS cannot be asked or answers anything else."""
        if self._disabled():
            raise MetadataUnavailable("instance metadata is disabled (AWS_EC2_METADATA_DISABLED)")
        try:
            response = self._get(path)
            if response.status_code == 401:  # the token expired (a long-lived agent): anew
                self._token = None
                response = self._get(path)
            if response.status_code == 404:
                return None
            response.raise_for_status()
        except requests.RequestException as exc:
            raise MetadataUnavailable(f"instance metadata {path} from {self.endpoint}: {exc}") from exc
        return response.text.strip()

    def _get(self, path: str) -> requests.Response:
        return requests.get(f"{self.endpoint}/latest/{path.lstrip('/')}",
                            headers={"X-aws-ec2-metadata-token": self.token()},
                            timeout=self.timeout)

    def instance(self) -> InstanceMetadata:
        return InstanceMetadata(
            hostname=self.get("meta-data/local-hostname"),
            ip=self.get("meta-data/local-ipv4"),
            region=self.get("meta-data/placement/region"),
            instance_id=self.get("meta-data/instance-id"),
        )
