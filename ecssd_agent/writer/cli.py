"""``ecssd-writer``: the zone writer as a process that polls the SQS queue.

In AWS the writer is a Lambda fed by the queue (``health_lambda.zone_writer_handler``; its
event source mapping does the batching window). This entry point runs the same
:class:`~ecssd_agent.writer.zone_writer.ZoneWriter` where there is no Lambda: on a host, in the local
demo against moto, in the tests.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecssd_agent import logs
from ecssd_agent.aws.change_queue import ChangeQueue, Hint, Message, QueueError
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.host_store import HostStore, StoreError
from ecssd_agent.aws.route53 import Route53Zone, ZoneError, find_zone
from ecssd_agent.config_fields import SettingsError
from ecssd_agent.writer.settings import WriterSettings, load_cli_settings
from ecssd_agent.writer.zone_writer import WriterInterrupted, ZoneWriter, read_hints

log = logging.getLogger("ecssd_agent.writer")

RETRY_MIN = 0.5
RETRY_MAX = 30.0


def build_writer(settings: WriterSettings, clients: Clients) -> ZoneWriter:
    route53 = clients.client("route53")
    zone = find_zone(route53, settings.domain, settings.hosted_zone_id or None,
                     settings.vpc_id or None)
    log.info("zone writer for %s (%s), host states in %s", zone.name, zone.id,
             settings.host_table)
    # Change requests: one attempt per call, the writer retries them (ZoneWriter._apply)
    # with the lease extended before each; reads keep botocore's retries.
    return ZoneWriter(Route53Zone(route53, zone, comment="ecssd writer",
                                  write_client=clients.client("route53", max_attempts=1)),
                      HostStore(clients.client("dynamodb"), settings.host_table),
                      verify_after=settings.verify_after, dry_run=settings.dry_run,
                      max_attempts=settings.aws_max_attempts)


class Poller:
    """Gather hints for ``batch_window`` after the first, write, acknowledge; until stopped."""

    def __init__(self, writer: ZoneWriter, queue: ChangeQueue, settings: WriterSettings,
                 stop: threading.Event) -> None:
        self.writer = writer
        self.queue = queue
        self.settings = settings
        self.stop = stop
        self.writes = 0

    def run(self) -> int:
        delay = RETRY_MIN
        while not self.stop.is_set():
            try:
                messages = self._gather()
                if not messages:
                    if self.settings.once:
                        return 0
                    continue
                if not self._handle(messages) and self.settings.once:
                    return 1  # handed back: the zone is not yet what the hosts published
                delay = RETRY_MIN
            except (ClientError, BotoCoreError, StoreError, QueueError) as exc:
                if self.settings.once:  # one pass was asked for: it failed, say so
                    log.error("write failed (the hints will be delivered again): %s", exc)
                    return 1
                log.error("write failed (the hints will be delivered again; retrying in "
                          "%.1fs): %s", delay, exc)
                if self.stop.wait(delay):
                    break
                delay = min(delay * 2, RETRY_MAX)
        return 0

    def _gather(self) -> list[Message]:
        first = self.queue.receive(wait=0 if self.settings.once else 5)
        if not first:
            return []
        messages = list(first)
        deadline = time.monotonic() + self.settings.batch_window
        while len(messages) < self.settings.max_batch and not self.stop.is_set():
            more = self.queue.receive(wait=0)
            messages.extend(more)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not more:
                self.stop.wait(min(left, 0.05))
        return messages

    def _handle(self, messages: list[Message]) -> bool:
        """Write the hinted hosts; False when some were handed back to the queue."""
        bodies = {m.id: m.body for m in messages}
        zone = self.writer.zone.zone.name
        hints = read_hints(bodies, zone)
        try:
            outcome = self.writer.write(hints.hosts)
        except WriterInterrupted as exc:
            # hand the unfinished hosts back at once, rather than after the visibility timeout
            self.queue.notify_many(Hint(h, zone, 0) for h in sorted(exc.unfinished))
            self.queue.delete(messages)
            log.warning("%s: %d host(s) handed back to the queue", exc, len(exc.unfinished))
            return False
        self.queue.delete(messages)  # bad messages too: delivering them again cannot help
        self.writes += 1
        log.info("wrote %d host(s) from %d hint(s): %d change(s) in %d change request(s), "
                 "%d read request(s)", outcome.hosts, len(messages), outcome.changes,
                 outcome.change_requests, outcome.read_requests,
                 extra={"summary": outcome.summary()})
        return True


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_cli_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"ecssd-writer: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_format, settings.log_level)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    clients = Clients(region=settings.region or None, max_attempts=settings.aws_max_attempts)
    try:
        writer = build_writer(settings, clients)
    except ZoneError as exc:
        log.error("%s", exc)
        return 1
    except (ClientError, BotoCoreError) as exc:
        log.error("AWS error: %s", exc)
        return 1
    queue = ChangeQueue(clients.client("sqs"), settings.change_queue)
    code = Poller(writer, queue, settings, stop).run()
    requests: dict[str, Any] = clients.stats.by_operation()
    log.info("stopped", extra={"aws_requests": requests})
    return code


if __name__ == "__main__":
    sys.exit(main())
