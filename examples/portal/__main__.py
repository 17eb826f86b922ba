"""``python3 -m examples.portal``: serve the portal on ``PORT`` (default 8080) until SIGTERM."""

from __future__ import annotations

import os
import sys

from examples.common.auth import AuthConfigError, credentials_from_env
from examples.common.discovery import SrvDiscovery, daemon_resolver
from examples.common.tracing import tracer_from_env
from examples.common.web import serve, setup_logging
from examples.portal.app import DEFAULT_CALC_SERVICE, DEFAULT_TIME_SERVICE, NAME, PORT, make_app
from examples.portal.proxy import Backend


def main() -> int:
    setup_logging()
    try:
        credentials = credentials_from_env()
        discovery = SrvDiscovery()
    except (AuthConfigError, ValueError) as exc:  # ValueError: a malformed ECSSD_DNS
        print(f"portal: {exc}", file=sys.stderr)
        return 2
    timeout = float(os.environ.get("BACKEND_TIMEOUT", "2"))
    tracer = tracer_from_env(NAME, daemon_resolver())
    time_backend = Backend("time", os.environ.get("TIME_SERVICE", DEFAULT_TIME_SERVICE),
                           discovery, credentials, timeout=timeout, tracer=tracer)
    calc_backend = Backend("calc", os.environ.get("CALC_SERVICE", DEFAULT_CALC_SERVICE),
                           discovery, credentials, timeout=timeout, tracer=tracer)
    return serve(make_app(time_backend, calc_backend, tracer), PORT)


if __name__ == "__main__":
    sys.exit(main())
