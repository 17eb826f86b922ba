"""ecssd's benchmarks: ``python3 -m benchmarks [--quick]`` runs every ``bench_*.py`` module.

Each module exposes ``run(quick: bool = False) -> list[dict]``, one dict per figure:
``{"area", "metric", "value", "unit", "goal", "note"}``; figures are measured, never assumed.

Rule zero holds here as in the tests: no request may reach real AWS or the EC2 metadata
address. Importing this package (which ``python3 -m benchmarks.bench_x`` also does) therefore
forces fake credentials and a fixed region, disables instance metadata, and drops any AWS
endpoint that is not on loopback; each benchmark points boto3 at its own moto server.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9/",
    "AWS_CONFIG_FILE": "/nonexistent/ecssd-benchmarks/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/ecssd-benchmarks/aws-credentials",
}
_CREDENTIAL_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def safe_env() -> None:
    """Make this process (and its subprocesses) unable to talk to real AWS; idempotent."""
    for name in _CREDENTIAL_VARS:
        os.environ.pop(name, None)
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        if urlparse(os.environ[name]).hostname not in _LOOPBACK:
            del os.environ[name]
    os.environ.update(FAKE_AWS_ENV)


safe_env()
