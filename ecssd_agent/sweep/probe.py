"""HTTP health checks: many at once, each bounded by a timeout and a number of attempts.

The checks run in a bounded thread pool (the work is waiting on sockets), and the whole phase
can be given a deadline (the Lambda's remaining time): an instance whose checks did not
finish by then gets no verdict, which means it is not judged, never that it is unhealthy.
One connection per attempt, no redirects followed: a 2xx is healthy, anything else is not.
The timeout bounds the whole attempt (:mod:`ecssd_agent.http_deadline`), so a container that
trickles its answer is as unhealthy as one that never answers.
"""


from __future__ import annotations

import concurrent.futures
import http.client
import logging
import time
from collections.abc import Sequence

from ecssd_agent import http_deadline
from ecssd_agent.sweep.decide import Target, Verdict

log = logging.getLogger(__name__)

USER_AGENT = "ecssd-health-sweep"


def check_once(ip: str, port: int, path: str, timeout: float) -> Verdict:
    """One GET; ``timeout`` bounds all of it: connect, request, headers and body."""
    try:
        status = http_deadline.get(ip, port, path, {"User-Agent": USER_AGENT,
                                                    "Connection": "close"},
                                   timeout, max_body=65536).status
    except TimeoutError:
        return Verdict(False, f"timed out after {timeout:g}s")
    except ConnectionRefusedError:
        return Verdict(False, "connection refused")
    except (OSError, http.client.HTTPException) as exc:
        return Verdict(False, f"{type(exc).__name__}: {exc}".rstrip(": "))
    return Verdict(200 <= status < 300, f"HTTP {status}")


def check(ip: str, port: int, path: str, timeout: float, attempts: int) -> Verdict:
    """Up to ``attempts`` GETs; the first 2xx is healthy, else the last failure is reported."""
    verdict = Verdict(False, "not checked")
    for _ in range(max(1, attempts)):
        verdict = check_once(ip, port, path, timeout)
        if verdict.healthy:
            break
    return verdict


def probe_all(
    targets: Sequence[Target],
    *,
    timeout: float,
    attempts: int,
    concurrency: int,
    deadline: float | None = None,
) -> dict[str, Verdict]:
    """Check every target concurrently; returns verdicts by target key.

    ``deadline`` is a :func:`time.monotonic` value; targets without a verdict by then are
    left out of the result (not judged). Threads still waiting on a socket are abandoned:
    each ends within ``timeout`` x ``attempts`` on its own.
    """
    if not targets:
        return {}
    results: dict[str, Verdict] = {}
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, min(concurrency, len(targets))), thread_name_prefix="probe")
    try:
        futures = {pool.submit(check, t.ip, t.port, t.path, timeout, attempts): t
                   for t in targets}
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            for future in concurrent.futures.as_completed(futures, timeout=wait):
                results[futures[future].key] = future.result()
        except concurrent.futures.TimeoutError:
            log.warning("health checks: %d of %d had no verdict by the deadline",
                        len(targets) - len(results), len(targets))
    finally:
        pool.shutdown(wait=deadline is None, cancel_futures=True)
    return results
