"""The portal: ``GET /`` serves the page; ``/time/<layout>`` and ``/calc/<formula>`` proxy.

Settings (environment): ``TIME_SERVICE`` and ``CALC_SERVICE`` name the services as the
task definitions publish them (``SERVICE_<port>_NAME``; defaults ``_time._tcp`` and
``_calc._tcp``), resolved in ``ECSSD_DOMAIN`` (default ``servicediscovery.internal``) by
ecssd's DNS client (``ECSSD_DNS=host:port`` points it at a local server). ``AUTH_USER`` /
``AUTH_PASSWORD`` are the credentials the portal sends to the services; the page itself
is public, like the reference's.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path

from examples.common.tracing import NO_TRACER, Tracer
from examples.common.web import HTML, App, Request, Response
from examples.portal.proxy import Backend

NAME = "portal"
PORT = 8080
DEFAULT_TIME_SERVICE = "_time._tcp"
DEFAULT_CALC_SERVICE = "_calc._tcp"
PAGE = Path(__file__).with_name("index.html")


def make_app(time_backend: Backend, calc_backend: Backend, tracer: Tracer = NO_TRACER) -> App:
    page = PAGE.read_bytes()

    def index(_request: Request, _rest: str) -> Response:
        return Response(HTTPStatus.OK, page, HTML)

    app = App(NAME, auth=None, tracer=tracer)
    app.route("/", index, public=True, exact=True)
    app.route("/time/", lambda _r, argument: time_backend.call(argument), public=True)
    app.route("/calc/", lambda _r, argument: calc_backend.call(argument), public=True)
    return app
