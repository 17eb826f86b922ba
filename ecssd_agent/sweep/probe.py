"""Health checks, HTTP or TCP: many at once, each bounded by a timeout and a number of attempts.

The checks run in a bounded thread pool (the work is waiting on sockets), and the whole phase
can be given a deadline (the Lambda's remaining time): an instance whose checks did not
finish by then gets no verdict, which means it is not judged, never that it is unhealthy.

HTTP: one connection per attempt, no redirects followed: a 2xx is healthy, any other status
is not. The timeout bounds the whole attempt (:mod:`ecssd_agent.http_deadline`), so a
container that trickles its answer is as unhealthy as one that never answers. A service
that accepts the connection and answers something that is not HTTP (a Redis ``-ERR``, a
greeting) is judged as a TCP check would judge it: it accepted and answered, it is healthy.
TCP: a connection accepted is healthy.

Each verdict also says whether the target's host answered at all (:attr:`Verdict.reached`):
a connection or a reset is an answer from the host; a connect timeout or an unreachable
network is not. Any error of one check (its path, its answer) is that instance's "no
verdict" (:attr:`Verdict.judged` False), never an exception out of the sweep.
"""


from __future__ import annotations

import concurrent.futures
import http.client
import logging
import socket
import time
from collections.abc import Sequence

from ecssd_agent import http_deadline
from ecssd_agent.core.metadata import Check
from ecssd_agent.sweep.decide import Target, Verdict

log = logging.getLogger(__name__)

USER_AGENT = "ecssd-health-sweep"
MAX_BODY = 65536  # bytes of a body read before the connection is closed
NOT_HTTP = "answered, not in HTTP: judged by its TCP connection, accepted"


def _connect_failure(exc: OSError, timeout: float) -> Verdict:
    """A connection that was never made: a reset is the host's answer, silence is not."""
    if isinstance(exc, ConnectionRefusedError):
        return Verdict(False, "connection refused")
    if isinstance(exc, ConnectionResetError):
        return Verdict(False, "connection reset")
    if isinstance(exc, TimeoutError):
        return Verdict(False, f"no connection within {timeout:g}s", reached=False)
    return Verdict(False, f"cannot connect: {type(exc).__name__}: {exc}".rstrip(": "),
                   reached=False)


def check_once(ip: str, port: int, path: str, timeout: float) -> Verdict:
    """One GET; ``timeout`` bounds all of it: connect, request, status line and headers."""
    connection = http_deadline.DeadlineConnection(ip, port,
                                                  deadline=time.monotonic() + timeout)
    try:
        try:
            connection.connect()
        except OSError as exc:
            return _connect_failure(exc, timeout)
        try:
            connection.request("GET", path, headers={"User-Agent": USER_AGENT,
                                                     "Connection": "close"})
            response = connection.getresponse()
        except TimeoutError:
            return Verdict(False, f"timed out after {timeout:g}s")
        except http.client.RemoteDisconnected:
            return Verdict(False, "closed the connection without an answer")
        except (http.client.BadStatusLine, http.client.LineTooLong):
            return Verdict(True, NOT_HTTP)
        except (OSError, http.client.HTTPException) as exc:
            return Verdict(False, f"{type(exc).__name__}: {exc}".rstrip(": "))
        try:  # the status is the verdict; the body is read so the server sees a clean close
            response.read(MAX_BODY)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            response.close()
        return Verdict(200 <= response.status < 300, f"HTTP {response.status}")
    finally:
        connection.close()


def tcp_once(ip: str, port: int, timeout: float) -> Verdict:
    """One TCP connection, closed at once: accepted is healthy."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            pass
    except OSError as exc:
        return _connect_failure(exc, timeout)
    return Verdict(True, "accepts connections")


def check(ip: str, port: int, path: str, timeout: float, attempts: int,
          kind: Check = Check.HTTP) -> Verdict:
    """Up to ``attempts`` checks; the first healthy one wins, else the last failure is
    reported, ``reached`` if any attempt reached the host."""
    verdict = Verdict(False, "not checked", reached=False)
    reached = False
    for _ in range(max(1, attempts)):
        verdict = (tcp_once(ip, port, timeout) if kind is Check.TCP
                   else check_once(ip, port, path, timeout))
        if verdict.healthy:
            return verdict
        reached = reached or verdict.reached
    return Verdict(False, verdict.detail, reached=reached)


def _check_target(target: Target, timeout: float, attempts: int) -> Verdict:
    """The target's check; whatever goes wrong inside it is this instance's no verdict."""
    try:
        return check(target.ip, target.port, target.path, timeout, attempts, target.check)
    except Exception as exc:  # one instance's error must stay its own
        return Verdict(False, f"the check itself failed: {type(exc).__name__}: {exc}",
                       reached=False, judged=False)


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
        futures = {pool.submit(_check_target, t, timeout, attempts): t for t in targets}
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
