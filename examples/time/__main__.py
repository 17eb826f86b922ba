"""``python3 -m examples.time``: serve on ``PORT`` (default 8082) until SIGTERM."""

from __future__ import annotations

import sys

from examples.common.auth import AuthConfigError, BasicAuth
from examples.common.discovery import daemon_resolver
from examples.common.tracing import tracer_from_env
from examples.common.web import serve, setup_logging
from examples.time.app import NAME, PORT, make_app


def main() -> int:
    setup_logging()
    try:
        auth = BasicAuth.from_env()
    except AuthConfigError as exc:
        print(f"time: {exc}", file=sys.stderr)
        return 2
    return serve(make_app(auth, tracer_from_env(NAME, daemon_resolver())), PORT)


if __name__ == "__main__":
    sys.exit(main())
