"""The agent's side of the queued mode: publish this host's desired state, hint the writer.

In queued mode no agent talks to Route 53: one zone writer applies the publications of the
whole fleet in a few big batches (:mod:`ecssd_agent.writer.zone_writer`). A publication is
the host's WHOLE desired state, never a diff, so a lost, repeated or reordered hint can never
leave a wrong record: the writer reads the newest state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ecssd_agent.aws.change_queue import ChangeQueue, Hint
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.core.host_state import Published
from ecssd_agent.core.model import RecordSet

log = logging.getLogger(__name__)


class Publisher:
    """Publishes one host's desired state: one PutItem, then one SendMessage.

    ``seq`` is the wall clock in nanoseconds, bumped to stay increasing, so a restarted agent
    publishes newer states than it did before. Its first publication asks the writer to read
    the zone for this host (``verify``): records may have changed while it was away.
    """

    def __init__(self, store: HostStore, queue: ChangeQueue, host: str, zone: str,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.queue = queue
        self.host = host
        self.zone = zone
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._last: tuple[RecordSet, ...] | None = None
        self.publications = 0

    def publish(self, desired: Sequence[RecordSet], *, force: bool = False,
                verify: bool = False) -> bool:
        """Publish ``desired`` unless it equals the last publication (``force``: always, as a
        resync does, which also re-sends a hint that may have been lost). True if published.

        AWS errors propagate with nothing remembered: the caller retries the same state.
        """
        records = tuple(sorted(desired, key=lambda r: (r.name, r.type, r.set_identifier or "")))
        with self._lock:
            if not force and not verify and records == self._last:
                return False
            seq = max(self._clock(), self._seq + 1)
            pub = Published(self.host, self.zone, seq, records, verify or self._last is None)
            self.store.publish(pub)
            self._seq = seq
            self.queue.notify(Hint(self.host, self.zone, seq))
            self._last = records
            self.publications += 1
        log.debug("published %d record set(s) as seq %d", len(records), seq,
                  extra={"records": len(records), "seq": seq})
        return True
