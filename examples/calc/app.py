"""The calc service: solves a URL-encoded formula such as ``(2+2)*3`` with a safe parser.

``GET /calc/<formula>`` -> 200 ``{"value": 12, "formula": "(2+2)*3", "container_id": ...}``;
a formula that cannot be evaluated (syntax, division by zero, too large) -> 400
``{"error": "..."}``. Basic auth on everything but ``/health``.
"""

from __future__ import annotations

from http import HTTPStatus

from examples.calc.parser import CalcError, calculate
from examples.common import identity
from examples.common.auth import BasicAuth
from examples.common.tracing import NO_TRACER, Tracer
from examples.common.web import App, Request, Response, error, json_response

NAME = "calc"
PORT = 8081
PREFIX = "/calc/"


def make_app(auth: BasicAuth | None, tracer: Tracer = NO_TRACER,
             container_id: str | None = None) -> App:
    """The calc app; ``container_id`` defaults to this container's id."""
    answered_by = container_id or identity.container_id()

    def calc(_request: Request, formula: str) -> Response:
        try:
            value = calculate(formula)
        except CalcError as exc:
            return error(HTTPStatus.BAD_REQUEST, str(exc), formula=formula)
        return json_response(HTTPStatus.OK, {"value": value, "formula": formula,
                                             "container_id": answered_by})

    app = App(NAME, auth, tracer)
    app.route(PREFIX, calc)
    return app
