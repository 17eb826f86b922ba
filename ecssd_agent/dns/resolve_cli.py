"""``ecssd-resolve NAME [--type SRV|A]``: what would my service resolve to? Prints like ``dig +short``.

The name is expanded as the client library does it (``calc`` -> ``calc.<domain>.``) and
asked of the same resolver (the system's, or ``ECSSD_DNS=host:port``), so what it prints
is what a service using :mod:`ecssd_agent.dns.client` sees. ``--instances`` prints the
library's result itself: ``target ip port`` per line, in the order a client would try.

Exit status: 0 with answers; 1 when the name does not exist or has no such records (a
message on stderr, nothing on stdout); 2 for usage errors; 3 when the resolver fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import dns.exception
import dns.resolver

from ecssd_agent.dns.client import (
    ENV_DNS,
    ENV_DOMAIN,
    DiscoveryError,
    NoInstances,
    ServiceResolver,
    make_resolver,
)

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_RESOLVER = 0, 1, 2, 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecssd-resolve",
        description="Resolve a service name as ecssd's client library does and print the "
                    "answers like `dig +short`.",
        epilog=f"The resolver is the system's unless {ENV_DNS}=host:port (or --server) is set; "
               f"relative names are in {ENV_DOMAIN} (or --domain, default "
               "servicediscovery.internal).",
    )
    p.add_argument("name", help="calc, _calc._tcp, or a full name (a trailing dot: as is)")
    p.add_argument("--type", "-t", default="SRV", type=str.upper, choices=("SRV", "A"),
                   help="record type to ask for (default SRV)")
    p.add_argument("--domain", default=None, help=f"domain of relative names (env {ENV_DOMAIN})")
    p.add_argument("--server", default=None, help=f"resolver host[:port] (env {ENV_DNS})")
    p.add_argument("--tcp", action="store_true", help="ask over TCP")
    p.add_argument("--instances", action="store_true",
                   help="print the client library's instances: target ip port, in order")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        resolver = make_resolver(args.server, args.timeout)
        library = ServiceResolver(args.domain, resolver=resolver)
        qname = library.absolute(args.name)
    except ValueError as exc:
        print(f"ecssd-resolve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DiscoveryError as exc:
        print(f"ecssd-resolve: {exc}", file=sys.stderr)
        return EXIT_RESOLVER
    if args.instances:
        return _instances(library, qname)
    try:
        answer = resolver.resolve(qname, args.type, tcp=args.tcp, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        print(f"ecssd-resolve: {qname} does not exist (NXDOMAIN)", file=sys.stderr)
        return EXIT_NOT_FOUND
    except dns.exception.DNSException as exc:
        print(f"ecssd-resolve: {args.type} {qname}: {exc}", file=sys.stderr)
        return EXIT_RESOLVER
    lines = [rdata.to_text() for rrset in answer.response.answer for rdata in rrset]
    if answer.rrset is None:
        print(f"ecssd-resolve: {qname} has no {args.type} record", file=sys.stderr)
        return EXIT_NOT_FOUND
    print("\n".join(lines))
    return EXIT_OK


def _instances(library: ServiceResolver, qname: str) -> int:
    try:
        instances = library.resolve(qname)
    except NoInstances as exc:
        print(f"ecssd-resolve: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except DiscoveryError as exc:
        print(f"ecssd-resolve: {exc}", file=sys.stderr)
        return EXIT_RESOLVER
    for instance in instances:
        print(f"{instance.target}. {instance.ip} {instance.port}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
