"""Optional AWS X-Ray tracing: on only when ``aws-xray-sdk`` is installed and a daemon is known.

Why optional: the example images carry nothing pip-installed, and the demo runs offline
without an X-Ray daemon; tracing must never be a reason for a service not to start.
The daemon is found from ``AWS_XRAY_DAEMON_ADDRESS`` (``host:port``, what the SDK and the
ECS sidecar use) or, in the spirit of this project, through service discovery: set
``XRAY_DAEMON_SERVICE`` to its SRV name (e.g. ``_xray._udp``) and the caller's resolver
turns it into an address. ``XRAY_DISABLED=true`` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

log = logging.getLogger("examples.tracing")

ADDRESS_VAR = "AWS_XRAY_DAEMON_ADDRESS"
SERVICE_VAR = "XRAY_DAEMON_SERVICE"
DISABLED_VAR = "XRAY_DISABLED"
HEADER = "X-Amzn-Trace-Id"


class TracedRequest(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    def header(self, name: str) -> str | None: ...


class SegmentHandle:
    """What a request handler may record on its segment (a no-op when not tracing)."""

    def status(self, code: int) -> None:
        """Record the response status."""


class Tracer:
    """No tracing: the default. ``XRayTracer`` overrides both context managers."""

    enabled = False

    @contextlib.contextmanager
    def segment(self, name: str, request: TracedRequest) -> Iterator[SegmentHandle]:
        yield SegmentHandle()

    @contextlib.contextmanager
    def subsegment(self, name: str) -> Iterator[str | None]:
        """Wrap an outgoing call; yields the ``X-Amzn-Trace-Id`` header to send, if any."""
        yield None


NO_TRACER = Tracer()


class _XRaySegment(SegmentHandle):
    def __init__(self, segment: Any) -> None:
        self._segment = segment

    def status(self, code: int) -> None:
        self._segment.put_http_meta("status", code)
        self._segment.apply_status_code(code)


class XRayTracer(Tracer):
    """Segments per request (continuing an incoming trace header), subsegments per call."""

    enabled = True

    def __init__(self, service: str, daemon_address: str) -> None:
        from aws_xray_sdk.core import AWSXRayRecorder  # optional dependency

        self.service = service
        self.daemon_address = daemon_address
        self.recorder = AWSXRayRecorder()
        # sampling=False: trace every request. These are demo services; a real one would
        # keep the SDK's default sampling rules.
        self.recorder.configure(daemon_address=daemon_address, sampling=False,
                                context_missing="LOG_ERROR", plugins=(), service=service)

    @contextlib.contextmanager
    def segment(self, name: str, request: TracedRequest) -> Iterator[SegmentHandle]:
        from aws_xray_sdk.core.models.trace_header import TraceHeader

        incoming = TraceHeader.from_header_str(request.header(HEADER))
        segment = self.recorder.begin_segment(name=name, traceid=incoming.root,
                                              parent_id=incoming.parent)
        segment.put_http_meta("method", request.method)
        segment.put_http_meta("url", request.path)
        try:
            yield _XRaySegment(segment)
        finally:
            self.recorder.end_segment()

    @contextlib.contextmanager
    def subsegment(self, name: str) -> Iterator[str | None]:
        from aws_xray_sdk.core.models.trace_header import TraceHeader

        sub = self.recorder.begin_subsegment(name, namespace="remote")
        if sub is None:  # no segment open on this thread (LOG_ERROR mode)
            yield None
            return
        header = TraceHeader(root=sub.trace_id, parent=sub.id, sampled=1).to_header_str()
        try:
            yield header
        finally:
            self.recorder.end_subsegment()


def tracer_from_env(
    service: str,
    resolve: Callable[[str], str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Tracer:
    """The tracer the environment asks for; ``NO_TRACER`` whenever anything is missing.

    ``resolve`` turns ``XRAY_DAEMON_SERVICE`` into ``host:port`` (the services pass one
    built on ecssd's DNS client when it is importable).
    """
    env = os.environ if environ is None else environ
    if env.get(DISABLED_VAR, "").strip().lower() in {"1", "true", "yes", "on"}:
        return NO_TRACER
    address = env.get(ADDRESS_VAR, "").strip()
    wanted = env.get(SERVICE_VAR, "").strip()
    if not address and wanted:
        address = (resolve(wanted) if resolve is not None else None) or ""
        if not address:
            log.warning("X-Ray daemon %s not found: tracing off", wanted)
    if not address:
        return NO_TRACER
    try:
        tracer = XRayTracer(service, address)
    except ImportError:
        log.info("aws-xray-sdk is not installed: tracing off")
        return NO_TRACER
    log.info("X-Ray tracing to %s", address)
    return tracer
