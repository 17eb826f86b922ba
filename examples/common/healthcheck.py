"""``python3 -m examples.common.healthcheck``: exit 0 when ``GET /health`` on ``PORT`` is 200.

The images' HEALTHCHECK uses it because a bare Python image has no curl or wget.
"""

from __future__ import annotations

import http.client
import os
import sys


def main() -> int:
    port = int(os.environ.get("PORT", "8080"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        connection.request("GET", "/health")
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
