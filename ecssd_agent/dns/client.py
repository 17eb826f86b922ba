"""The client library services use: a service name -> an ordered list of (target, ip, port).

Names, exactly as the agent publishes them: ``SERVICE_8081_NAME=calc`` is ``calc.<zone>``
and ``SERVICE_8081_NAME=_calc._tcp`` is ``_calc._tcp.<zone>``. So :meth:`resolve` takes the
name as declared and queries ``<name>.<domain>`` for SRV, where the domain is the argument,
else ``ECSSD_DOMAIN``, else ``servicediscovery.internal``. A name already ending in the
domain, or ending with a dot (absolute), is queried as it is. No search list is applied:
one query per lookup, and no surprise answers from another domain.

Order: the SRV records in RFC 2782 order (priority, then weighted random within a
priority; dnspython's ``processing_order``), each expanded into one instance per IPv4
address of its target. Addresses come from the answer's additional section when the server
put them there (``ecssd-dns`` does), else from an A query per target.

Cache: answers are kept for their TTL (``TTL 0``, the agent's default, means no caching:
every call asks the resolver), at most ``cache_size`` names; the order is recomputed on
every call, so a cached answer still spreads load. Negative answers are not cached, so a
service that just registered is found at once.

Resolver: the system's (``/etc/resolv.conf``: the VPC resolver in AWS) unless
``ECSSD_DNS=host[:port]`` (e.g. ``127.0.0.1:5353`` for a local ``ecssd-dns``) or the
``nameserver`` argument says otherwise.

Errors: :class:`NoInstances` when the name does not exist, has no SRV records, or no
target has an address; :class:`ResolverError` when the resolver cannot answer (timeout,
SERVFAIL, REFUSED). Both are :class:`DiscoveryError`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from ecssd_agent.config_fields import DEFAULT_DOMAIN

log = logging.getLogger(__name__)

ENV_DNS = "ECSSD_DNS"
ENV_DOMAIN = "ECSSD_DOMAIN"
DEFAULT_LIFETIME = 3.0
EDNS_PAYLOAD = 1232


class DiscoveryError(Exception):
    """Base of the errors this library raises."""


class NoInstances(DiscoveryError):
    """The service has no instance to connect to; ``name`` is the absolute name asked."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"no instance of {name}: {reason}")
        self.name = name
        self.reason = reason


class ResolverError(DiscoveryError):
    """The resolver did not answer (timeout, SERVFAIL, REFUSED, no configuration)."""


class Instance(NamedTuple):
    target: str  # the SRV target, without the trailing dot: "ip-10-0-0-12.servicediscovery.internal"
    ip: str
    port: int


class SupportsResolve(Protocol):
    """What this library needs of a resolver (``dns.resolver.Resolver``, or a test stub)."""

    def resolve(self, qname: Any, rdtype: Any = ..., *args: Any, **kwargs: Any) -> Any: ...


def parse_nameserver(value: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (IP address, port)."""
    value = value.strip()
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = int(port_text)
    if not host or not 0 < port < 65536:
        raise ValueError(f"not a nameserver address: {value!r} (host[:port])")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                  flags=socket.AI_NUMERICSERV)
    except socket.gaierror as exc:
        raise ValueError(f"nameserver {host!r} does not resolve: {exc}") from exc
    return str(info[0][4][0]), port


def make_resolver(nameserver: str | None = None, lifetime: float = DEFAULT_LIFETIME
                  ) -> dns.resolver.Resolver:
    """The system resolver, or one asking ``nameserver`` (default: ``$ECSSD_DNS``)."""
    nameserver = nameserver if nameserver is not None else os.environ.get(ENV_DNS, "")
    if nameserver:
        ip, port = parse_nameserver(nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [ip]
        resolver.port = port
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise ResolverError(f"no system resolver configured ({exc}); set {ENV_DNS}") from exc
    resolver.lifetime = lifetime
    resolver.use_edns(0, 0, EDNS_PAYLOAD)  # more fits in UDP; TCP when it still does not
    return resolver


class _Entry(NamedTuple):
    expires: float
    value: Any


class ServiceResolver:
    """Resolves service names; thread-safe; see the module docstring for the rules."""

    def __init__(
        self,
        domain: str | None = None,
        nameserver: str | None = None,
        resolver: SupportsResolve | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 256,
        lifetime: float = DEFAULT_LIFETIME,
    ) -> None:
        domain = domain or os.environ.get(ENV_DOMAIN) or DEFAULT_DOMAIN
        self.domain = domain.strip().lower().rstrip(".")
        self.resolver: SupportsResolve = resolver or make_resolver(nameserver, lifetime)
        self.clock = clock
        self.cache_size = cache_size
        self.queries = 0  # queries sent to the resolver (tests and metrics read it)
        self._cache: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def absolute(self, name: str) -> str:
        """``calc`` -> ``calc.<domain>.``; ``calc.<domain>`` and ``x.example.`` unchanged."""
        name = name.strip().lower()
        if not name or name == ".":
            raise ValueError("empty service name")
        if name.endswith("."):
            return name
        if name == self.domain or name.endswith("." + self.domain):
            return name + "."
        return f"{name}.{self.domain}."

    def resolve(self, name: str) -> list[Instance]:
        """Every instance of the service, in the order to try them."""
        qname = self.absolute(name)
        rrset, additional = self._srv(qname)
        instances: list[Instance] = []
        failures: list[str] = []
        for srv in rrset.processing_order():
            if srv.target == dns.name.root:
                continue  # RFC 2782: "." means the service is decidedly not available here
            target = srv.target.to_text().lower()
            try:
                ips = additional.get(target) or self._addresses(target)
            except NoInstances as exc:
                failures.append(exc.reason)
                continue
            instances.extend(Instance(target.rstrip("."), ip, srv.port) for ip in ips)
        if not instances:
            raise NoInstances(qname, "; ".join(failures) or "no SRV record has a target")
        return instances

    def resolve_one(self, name: str) -> Instance:
        """The instance to try first."""
        return self.resolve(name)[0]

    def addresses(self, name: str) -> list[str]:
        """The IPv4 addresses of a host name (relative names are in the domain)."""
        return self._addresses(self.absolute(name))

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    # --- queries and the cache -----------------------------------------------------------

    def _srv(self, qname: str) -> tuple[Any, dict[str, list[str]]]:
        cached = self._cached(qname, dns.rdatatype.SRV)
        if cached is not None:
            return cached
        answer = self._query(qname, dns.rdatatype.SRV)
        additional: dict[str, list[str]] = {}
        ttls = [answer.rrset.ttl]
        for rrset in answer.response.additional:
            if rrset.rdtype == dns.rdatatype.A and rrset.rdclass == dns.rdataclass.IN:
                name = rrset.name.to_text().lower()
                additional.setdefault(name, []).extend(r.address for r in rrset)
                ttls.append(rrset.ttl)
        value = (answer.rrset, additional)
        self._store(qname, dns.rdatatype.SRV, min(ttls), value)
        return value

    def _addresses(self, qname: str) -> list[str]:
        cached = self._cached(qname, dns.rdatatype.A)
        if cached is not None:
            return list(cached)
        answer = self._query(qname, dns.rdatatype.A)
        ips = [r.address for r in answer.rrset]
        self._store(qname, dns.rdatatype.A, answer.rrset.ttl, ips)
        return ips

    def _query(self, qname: str, rdtype: dns.rdatatype.RdataType) -> Any:
        what = dns.rdatatype.to_text(rdtype)
        self.queries += 1
        try:
            return self.resolver.resolve(qname, rdtype, raise_on_no_answer=True)
        except dns.resolver.NXDOMAIN as exc:
            raise NoInstances(qname, f"{qname} does not exist (NXDOMAIN)") from exc
        except dns.resolver.NoAnswer as exc:
            raise NoInstances(qname, f"{qname} has no {what} record") from exc
        except (dns.resolver.NoNameservers, dns.exception.Timeout,
                dns.resolver.NoResolverConfiguration) as exc:
            raise ResolverError(f"{what} {qname}: {exc}") from exc
        except dns.exception.DNSException as exc:
            raise ResolverError(f"{what} {qname}: {exc.__class__.__name__}: {exc}") from exc

    def _cached(self, qname: str, rdtype: int) -> Any:
        with self._lock:
            entry = self._cache.get((qname, rdtype))
            if entry is None:
                return None
            if self.clock() >= entry.expires:
                del self._cache[(qname, rdtype)]
                return None
            self._cache.move_to_end((qname, rdtype))
            return entry.value

    def _store(self, qname: str, rdtype: int, ttl: int, value: Any) -> None:
        if ttl <= 0 or self.cache_size <= 0:
            return
        with self._lock:
            self._cache[(qname, rdtype)] = _Entry(self.clock() + ttl, value)
            self._cache.move_to_end((qname, rdtype))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


_default: ServiceResolver | None = None
_default_lock = threading.Lock()


def default_resolver() -> ServiceResolver:
    """One process-wide resolver, created on first use from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ServiceResolver()
        return _default


def resolve(name: str) -> list[Instance]:
    """``resolve("calc")``: every instance of the service, in the order to try them."""
    return default_resolver().resolve(name)


def resolve_one(name: str) -> Instance:
    """``resolve_one("calc")``: the instance to try first."""
    return default_resolver().resolve_one(name)
