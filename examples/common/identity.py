"""Who answered: the container id and the EC2 instance id, as the reference's time service said.

Why it matters: the portal shows which instance served each request, which is how a person
sees the load spread over containers and hosts, and a failover happen.

- Container id: Docker bind-mounts ``/etc/hostname`` from
  ``<data-root>/containers/<64 hex id>/hostname``, so ``/proc/self/mountinfo`` names the full
  id under cgroup v1 and v2 alike; the short hostname is the fallback.
- Instance id: ``INSTANCE_ID`` if set (the local demo sets it), else EC2 instance metadata
  with IMDSv2, at ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` if set, never when
  ``AWS_EC2_METADATA_DISABLED`` is true; "unknown" when it cannot be had.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("examples.identity")

DEFAULT_IMDS = "http://169.254.169.254"
UNKNOWN = "unknown"
_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def container_id(mountinfo: Path = Path("/proc/self/mountinfo")) -> str:
    try:
        match = _CONTAINER_ID.search(mountinfo.read_text(errors="replace"))
    except OSError:
        match = None
    return match.group(1) if match else socket.gethostname()


def instance_id(environ: Mapping[str, str] | None = None, timeout: float = 1.0) -> str:
    env = os.environ if environ is None else environ
    if env.get("INSTANCE_ID"):
        return env["INSTANCE_ID"]
    if env.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true":
        return UNKNOWN
    base = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", DEFAULT_IMDS).rstrip("/")
    try:
        token_request = urllib.request.Request(
            f"{base}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
        with urllib.request.urlopen(token_request, timeout=timeout) as response:
            token = response.read().decode().strip()
        id_request = urllib.request.Request(
            f"{base}/latest/meta-data/instance-id",
            headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(id_request, timeout=timeout) as response:
            return response.read().decode().strip() or UNKNOWN
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("no instance id from instance metadata at %s: %s", base, exc)
        return UNKNOWN
