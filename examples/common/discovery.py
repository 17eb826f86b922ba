"""Service discovery for the examples, on ecssd's DNS client library (SRV records).

The portal depends on this; time and calc use it only to find an X-Ray daemon. The client
library (``ecssd_agent.dns.client``, with dnspython) is imported lazily so that a service
which does not need discovery still starts in an image without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ecssd_agent.dns.client import ServiceResolver

log = logging.getLogger("examples.discovery")


@dataclass(frozen=True)
class Endpoint:
    """One instance of a service: the SRV target name, its address and port."""

    target: str
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.target}({self.address}):{self.port}"


class ServiceNotFound(LookupError):
    """The name resolved to no instance (NXDOMAIN, no SRV record, no address)."""


class DiscoveryError(RuntimeError):
    """The resolver could not be asked (timeout, SERVFAIL): unknown, which is not "none"."""


class Discovery(Protocol):
    def endpoints(self, service: str) -> Sequence[Endpoint]:
        """Instances in the order to try them; raises ServiceNotFound or DiscoveryError."""
        ...


class SrvDiscovery:
    """``Discovery`` on ecssd's ``ServiceResolver``: RFC 2782 order, TTL cache, ECSSD_DNS."""

    def __init__(self, resolver: ServiceResolver | None = None) -> None:
        if resolver is None:
            from ecssd_agent.dns.client import ServiceResolver

            resolver = ServiceResolver()
        self.resolver = resolver

    def endpoints(self, service: str) -> list[Endpoint]:
        from ecssd_agent.dns.client import NoInstances, ResolverError

        try:
            instances = self.resolver.resolve(service)
        except NoInstances as exc:
            raise ServiceNotFound(str(exc)) from exc
        except ResolverError as exc:
            raise DiscoveryError(str(exc)) from exc
        return [Endpoint(i.target, i.ip, i.port) for i in instances]


def daemon_resolver() -> Callable[[str], str | None] | None:
    """A function turning an SRV name into ``ip:port`` (for the X-Ray daemon); None without
    the client library."""
    try:
        discovery = SrvDiscovery()
    except ImportError:
        return None
    except Exception as exc:  # a resolver that cannot be configured: no tracing, still serve
        log.warning("service discovery unavailable: %s", exc)
        return None

    def resolve(name: str) -> str | None:
        try:
            first = discovery.endpoints(name)[0]
        except (ServiceNotFound, DiscoveryError, IndexError) as exc:
            log.warning("cannot find %s: %s", name, exc)
            return None
        return f"{first.address}:{first.port}"

    return resolve
