"""Prometheus HTTP service discovery: every instance of every service, from the server's view.

``ecssd-dns --http-port N`` serves ``GET /prometheus/targets`` in Prometheus' ``http_sd``
format: a JSON list of ``{"targets": ["<address>:<port>"], "labels": {...}}``. A DNS query
answers one weighted choice; a monitoring system must scrape *every* instance, so this reads
every SRV record set of the zone view the DNS server already holds (refreshed by
:mod:`.refresh`): no Route 53 request of its own, whatever the scrape rate.

One target group per SRV value, because each instance has its own labels. Labels follow the
convention of Prometheus' built-in discoveries (``__meta_<sd>_<name>``), so they are
available to ``relabel_configs`` and dropped afterwards unless relabelled:

``__meta_ecssd_service``         the record name relative to the zone (``_calc._tcp``, ``calc``)
``__meta_ecssd_record``          the record name, absolute without the trailing dot
``__meta_ecssd_host``            the SRV target (host or task name), without the trailing dot
``__meta_ecssd_port``            the SRV port (the published port)
``__meta_ecssd_cluster``         the ECS cluster from the SetIdentifier (ecssd's own records)
``__meta_ecssd_task``            the ECS task id from the SetIdentifier
``__meta_ecssd_container``       the container id (12 characters) of an agent's record
``__meta_ecssd_container_port``  the container port and protocol (``8081/tcp``)
``__meta_ecssd_set_identifier``  the record set's SetIdentifier ("" for a simple record set)

The owner fields are "" for record sets ecssd does not own (they are discovered too: they
are instances of the zone's services all the same).

The address: Prometheus scrapes ``__address__`` as given and resolves names with the
system resolver, which may not be the private zone's (a Prometheus outside the VPC, or
one using this very server only for discovery). So when the SRV target's A record in the
view answers exactly one address (a host's or task's own A record, as ecssd writes them),
the target is ``<ip>:<port>``; when it has no A/AAAA record or answers several addresses or
a per-query routing choice, the target is ``<host name>:<port>`` and Prometheus resolves it
at scrape time. IPv6 addresses are bracketed.

Before the first listing the view is not ready: the endpoint answers 503, and Prometheus
keeps the targets it had (an empty list would drop them all: "unknown" is not "none").
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import dns.exception

from ecssd_agent.core import ownership
from ecssd_agent.core.records import parse_srv
from ecssd_agent.dns import wire
from ecssd_agent.dns.view import ZoneView, deterministic
from ecssd_agent.http_serving import DEFAULT_LIMITS, LimitedHandler, LimitedHTTPServer, Limits

log = logging.getLogger(__name__)

PATH = "/prometheus/targets"
CONTENT_TYPE = "application/json"
LABEL_PREFIX = "__meta_ecssd_"

TargetGroup = dict[str, Any]


def target_groups(view: ZoneView) -> list[TargetGroup]:
    """The http_sd document of ``view``: one group per SRV value of every record set."""
    zone = view.zone.rstrip(".")
    groups: list[TargetGroup] = []
    addresses: dict[str, str | None] = {}  # a host's instances share its address
    for record in view.records:
        if record.type != "SRV" or record.alias:
            continue
        name = record.name.rstrip(".")
        service = name[: -len(zone) - 1] if name.endswith("." + zone) else name
        owner = ownership.parse_set_identifier(record.set_identifier)
        for value in record.values:
            try:
                srv = parse_srv(value)
            except ValueError:
                continue  # the view reports it among its problems; other values still count
            host = srv.target.rstrip(".")
            if srv.target not in addresses:
                addresses[srv.target] = _address(view, srv.target) if host else None
            address = addresses[srv.target] if srv.port else None
            if address is None:
                continue  # "." (no service) or not a DNS name: nothing to scrape
            labels = {
                "service": service,
                "record": name,
                "host": host,
                "port": str(srv.port),
                "cluster": owner.cluster if owner else "",
                "task": owner.task if owner else "",
                "container": owner.container if owner else "",
                "container_port": owner.port if owner else "",
                "set_identifier": record.set_identifier or "",
            }
            groups.append({
                "targets": [f"{address}:{srv.port}"],
                "labels": {LABEL_PREFIX + k: v for k, v in labels.items()},
            })
    groups.sort(key=lambda g: (g["labels"][LABEL_PREFIX + "record"], g["targets"][0],
                               g["labels"][LABEL_PREFIX + "set_identifier"]))
    return groups


def _address(view: ZoneView, target: str) -> str | None:
    """The one address the zone answers for ``target``, else the name (see the docstring);
    None when ``target`` is not a DNS name at all."""
    try:
        key = wire.name_key(target)
    except (dns.exception.DNSException, ValueError):
        return None
    found: list[str] = []
    for rdtype in (wire.T_A, wire.T_AAAA):
        group = view.groups.get((key, rdtype))
        if not group:
            continue
        entries = deterministic(group)
        if entries is None:  # a per-query choice: no single answer to pick
            return target.rstrip(".")
        found.extend(_addresses(e.rdatas for e in entries))
        if found:
            break  # A first: what an IPv4 Prometheus can reach
    distinct = list(dict.fromkeys(found))
    if len(distinct) != 1:
        return target.rstrip(".")
    return distinct[0]


def _addresses(rdata_sets: Iterable[tuple[bytes, ...]]) -> list[str]:
    out = []
    for rdatas in rdata_sets:
        for rdata in rdatas:
            ip = ipaddress.ip_address(rdata)
            out.append(f"[{ip}]" if ip.version == 6 else str(ip))
    return out


class Document:
    """The rendered document of the current view, rendered again only when the view changes.

    Views are immutable and replaced by assignment, so identity tells a change; a scrape
    between two refreshes costs one comparison.
    """

    def __init__(self, current_view: Callable[[], ZoneView]) -> None:
        self._current_view = current_view
        self._lock = threading.Lock()
        self._view: ZoneView | None = None
        self._body = b""

    def body(self) -> bytes | None:
        """The JSON body, or None while the view is not ready (no listing has succeeded)."""
        view = self._current_view()
        if not view.ready:
            return None
        with self._lock:
            if view is not self._view:
                self._body = json.dumps(target_groups(view), separators=(",", ":")).encode()
                self._view = view
            return self._body


class _Handler(LimitedHandler):
    document: Document  # set on the subclass made by HttpSdServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != PATH:
            self._reply(404, f"not found: try {PATH}\n".encode(), "text/plain; charset=utf-8")
            return
        try:
            body = self.document.body()
        except Exception as exc:  # a bug here must not stop DNS; Prometheus keeps its list
            log.error("rendering the Prometheus targets failed: %r", exc, exc_info=True)
            self._reply(500, b"internal error\n", "text/plain; charset=utf-8")
            return
        if body is None:
            self._reply(503, b"the zone has not been listed yet\n", "text/plain; charset=utf-8")
            return
        self._reply(200, body, CONTENT_TYPE)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class HttpSdServer:
    """Serves the targets over HTTP in a background thread (one thread per connection,
    within the caps and deadlines of :mod:`ecssd_agent.http_serving`; the process's DNS TCP
    port shares its descriptor room)."""

    def __init__(self, current_view: Callable[[], ZoneView], address: str, port: int,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        handler = type("HttpSdHandler", (_Handler,), {"document": Document(current_view)})
        # Resolved as the DNS port's address is (an IPv6 or a named listen address works).
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._server = LimitedHTTPServer(sockaddr[:2], handler, limits.within_fds(servers=2),
                                         family)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-sd",
                                        daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
