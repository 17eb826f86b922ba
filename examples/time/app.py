"""The time service: the current time formatted with a Go reference-time layout.

``GET /time/15:04%20Jan%202`` -> 200 ``{"value": "09:30 Mar 5", "layout": "15:04 Jan 2",
"container_id": ..., "instance_id": ...}``. The clock and the zone are the container's
(UTC unless ``TZ`` says otherwise). Basic auth on everything but ``/health``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus

from examples.common import identity
from examples.common.auth import BasicAuth
from examples.common.tracing import NO_TRACER, Tracer
from examples.common.web import App, Request, Response, error, json_response
from examples.time.golayout import format_go

NAME = "time"
PORT = 8082
PREFIX = "/time/"
MAX_LAYOUT = 256


def local_now() -> datetime:
    return datetime.now().astimezone()


def make_app(auth: BasicAuth | None, tracer: Tracer = NO_TRACER, *,
             clock: Callable[[], datetime] = local_now, container_id: str | None = None,
             instance_id: str | None = None) -> App:
    """The time app; identities default to this container's and this instance's."""
    answered_by = container_id or identity.container_id()
    instance = instance_id or identity.instance_id()

    def time_now(_request: Request, layout: str) -> Response:
        if not layout:
            return error(HTTPStatus.BAD_REQUEST, "give a layout, e.g. /time/15:04%20Jan%202")
        if len(layout) > MAX_LAYOUT:
            return error(HTTPStatus.BAD_REQUEST,
                         f"the layout is longer than {MAX_LAYOUT} characters")
        return json_response(HTTPStatus.OK, {"value": format_go(clock(), layout),
                                             "layout": layout, "container_id": answered_by,
                                             "instance_id": instance})

    app = App(NAME, auth, tracer)
    app.route(PREFIX, time_now)
    return app
