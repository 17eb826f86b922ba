"""``python3 -m examples.calc``: serve on ``PORT`` (default 8081) until SIGTERM."""

from __future__ import annotations

import sys

from examples.calc.app import NAME, PORT, make_app
from examples.common.web import run_service

if __name__ == "__main__":
    sys.exit(run_service(NAME, make_app, PORT))
