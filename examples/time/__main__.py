"""``python3 -m examples.time``: serve on ``PORT`` (default 8082) until SIGTERM."""

from __future__ import annotations

import sys

from examples.common.web import run_service
from examples.time.app import NAME, PORT, make_app

if __name__ == "__main__":
    sys.exit(run_service(NAME, make_app, PORT))
