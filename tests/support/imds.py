"""A fake EC2 instance metadata service (IMDSv2) on 127.0.0.1, whose items a test sets.

A PUT to ``/latest/api/token`` first; a GET without that token is refused (401), an item not
set answers 404, as IMDS does (``spot/instance-action`` without a notice, say). The agent is
pointed at it with ``--imds-endpoint`` and ``AWS_EC2_METADATA_DISABLED`` unset.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: The items of an ordinary instance (paths below /latest/).
INSTANCE = {"meta-data/local-hostname": "ip-10-0-0-12.ec2.internal",
            "meta-data/local-ipv4": "10.0.0.12",
            "meta-data/placement/region": "eu-west-1",
            "meta-data/instance-id": "i-0abc"}


class FakeImds:
    """The server; ``items`` (path below /latest/ -> body) may be changed at any time."""

    token = "tok-123"

    def __init__(self, items: dict[str, str] | None = None) -> None:
        self.items: dict[str, str] = dict(INSTANCE if items is None else items)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                ok = self.path == "/latest/api/token" and self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds")
                self._reply(200 if ok else 400, outer.token if ok else "")

            def do_GET(self) -> None:
                item = outer.items.get(self.path.removeprefix("/latest/"))
                if self.headers.get("X-aws-ec2-metadata-token") != outer.token:
                    self._reply(401, "")
                elif item is None:
                    self._reply(404, "")
                else:
                    self._reply(200, item)

            def _reply(self, status: int, body: str) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
