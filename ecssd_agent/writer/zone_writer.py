"""The zone writer of the queued mode: many hosts' publications in, a few big batches out.

Agents in queued mode make no Route 53 request: each publishes its whole desired state
(:mod:`ecssd_agent.aws.host_store`) and drops a hint on a queue. The writer takes the hints
of a batching window, plans every host against what it knows it applied
(:mod:`ecssd_agent.core.host_state`), and sends all the changes together: a 20% deployment
over 1,000 hosts (8,000 changes) is about 8 requests instead of 1,000+. It reads the zone
only where that knowledge is missing or old, or where the health sweep's *verify* hint says
it deleted records behind the writer's back (those names, for those hosts).

A batch Route 53 rejects names the record set it refused: the other hosts are sent again at
once, and only that record set's owner is read, re-planned and sent once more (a refusal
naming no host of the batch splits it in halves), so one host's impossible record set never
blocks the others.
"""


from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from ecssd_agent.aws.change_queue import BadHint, Hint, parse_hint, verify_hints
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.aws.route53 import (
    BatchRejected,
    Route53Zone,
    batches,
    error_meaning,
    from_wire,
    pack,
)
from ecssd_agent.core import ownership
from ecssd_agent.core.host_state import (
    Applied,
    Published,
    after,
    names_to_read,
    needs_read,
    plan_host,
    split_by_host,
)
from ecssd_agent.core.model import Change, RecordSet
from ecssd_agent.core.ownership import Kind
from ecssd_agent.core.plan import ForeignRecord
from ecssd_agent.sync.zone_reads import MAX_ITEMS, owned_records_by_names, zone_record_count

log = logging.getLogger(__name__)

#: A host's knowledge older than this is read from Route 53 again (drift repair: someone
#: changed or deleted the host's record sets by hand). A day, as the direct mode's ceiling.
DEFAULT_VERIFY_AFTER = 86400.0
#: The writers' lease: taken for this long and extended before every change request, so a
#: writer that died blocks the others for at most this long.
LEASE_SECONDS = 60.0
#: How long a writer waits for another to finish before giving its hosts back.
LOCK_WAIT = 120.0
#: Attempts per change request. The writer retries them itself (its Route 53 client makes one
#: attempt per call) so that it extends the lease before each: botocore's own retries of one
#: call can outlast the lease (10 attempts, waits up to 20 s), and an attempt sent after it
#: expired could land after another writer's newer changes.
MAX_ATTEMPTS = 10
#: Waits between attempts: random x min(2^k, RETRY_MAX_WAIT) seconds, botocore's backoff.
RETRY_MAX_WAIT = 20.0


@dataclass
class WriteOutcome:
    hosts: int = 0  # hosts planned
    changes: int = 0  # changes applied (or, in a dry run, that would be)
    change_requests: int = 0
    read_requests: int = 0
    hosts_read: int = 0
    hosts_verified: int = 0  # hosts whose names a verify hint asked to read
    rejected: int = 0  # batches Route 53 rejected
    failed: dict[str, str] = field(default_factory=dict)  # host -> why its changes did not land
    skipped: dict[str, str] = field(default_factory=dict)  # host -> why it was not planned

    def summary(self) -> dict[str, object]:
        return {"hosts": self.hosts, "changes": self.changes,
                "change_requests": self.change_requests, "read_requests": self.read_requests,
                "hosts_read": self.hosts_read, "hosts_verified": self.hosts_verified,
                "rejected_batches": self.rejected,
                "failed_hosts": dict(self.failed), "skipped_hosts": dict(self.skipped)}


class WriterInterrupted(RuntimeError):
    """The write stopped before every host was done; ``unfinished`` need another turn.

    Raised when another writer holds the lease longer than we may wait, or when the
    invocation's deadline comes. Nothing is lost: what was applied is saved, the rest is
    re-hinted by the caller (or its hints delivered again). ``verify``: the names of the
    verify hints not yet taken in (host -> names), to be handed back as verify hints.
    """

    def __init__(self, message: str, unfinished: Iterable[str]) -> None:
        super().__init__(message)
        self.unfinished = set(unfinished)
        self.verify: dict[str, set[str]] = {}

    def hand_back(self, zone: str) -> list[Hint]:
        """The hints that give the rest of the work back to the queue."""
        return ([Hint(h, zone, 0) for h in sorted(self.unfinished)]
                + verify_hints(zone, self.verify))


class ZoneWriter:
    """Writes the zone for many hosts at once; one at a time per table (a DynamoDB lease).

    Per Route 53 request, whole hosts are packed (``route53.pack``). Before a request its
    hosts are saved as "unknown" (verified never) and after it as applied, so a writer killed
    anywhere (Lambda timeout, crash) leaves either the truth or "read me next time" behind,
    never a wrong belief. A rejected request costs a read of the host whose record set Route
    53 named, not of the others (their knowledge is right: they land at once); unnamed, it
    is bisected by host without reading. The lease is extended before every change attempt,
    which is why the writer, not botocore, retries them.
    """

    def __init__(self, zone: Route53Zone, store: HostStore, *,
                 verify_after: float = DEFAULT_VERIFY_AFTER,
                 clock: Callable[[], float] = time.time, dry_run: bool = False,
                 lease: float = LEASE_SECONDS, lock_wait: float = LOCK_WAIT,
                 sleep: Callable[[float], None] = time.sleep, max_attempts: int = MAX_ATTEMPTS,
                 jitter: Callable[[], float] = random.random) -> None:
        self.zone = zone
        self.store = store
        self.verify_after = verify_after
        self.dry_run = dry_run
        self.lease = lease
        self.lock_wait = lock_wait
        self._clock = clock
        self._sleep = sleep
        self.max_attempts = max_attempts
        self._jitter = jitter
        self.retries = 0  # change attempts sent again (throttled, zone busy, server errors)
        self._owner = uuid.uuid4().hex
        self._deadline: float | None = None  # of the write under way

    def write(self, hosts: Iterable[str], deadline: float | None = None,
              verify: Mapping[str, Iterable[str]] | None = None) -> WriteOutcome:
        """Bring the record sets of ``hosts`` to what they last published.

        ``verify`` (host -> names, from verify hints): first read those names for those
        hosts and store what the zone holds as what they own there; such a host is planned
        only if it is in ``hosts`` too. ``deadline`` (this writer's clock): no request
        starts after it. Raises :class:`WriterInterrupted` (lease busy, deadline) with the
        hosts left to do; AWS errors other than a rejected batch propagate. Either way, what
        was applied is saved.
        """
        wanted = sorted(set(hosts))
        stale = {h: set(names) for h, names in (verify or {}).items() if names}
        if not wanted and not stale:
            return WriteOutcome()
        self._deadline = deadline
        if self.dry_run:  # writes nothing (not even DynamoDB): no need to hold up the writers
            return self._write(wanted, stale)
        try:
            self._take_lease(wanted, deadline)
        except WriterInterrupted as exc:  # nothing done: the verify hints are handed back too
            exc.verify = {h: set(names) for h, names in stale.items()}
            raise
        try:
            return self._write(wanted, stale)
        finally:
            self.store.release(self._owner)

    def _take_lease(self, hosts: list[str], deadline: float | None) -> None:
        give_up = self._clock() + self.lock_wait
        if deadline is not None:
            give_up = min(give_up, deadline)
        delay = 0.1
        while not self.store.acquire(self._owner, self.lease):
            if self._clock() + delay > give_up:
                raise WriterInterrupted("another zone writer holds the lease", hosts)
            self._sleep(delay)
            delay = min(delay * 2, 2.0)

    def _may_go_on(self, hosts: Iterable[str]) -> None:
        """Before every change attempt (and a bisection's read): stop at the deadline, and
        extend the lease, so that no other writer can take it while this one still writes.
        ``hosts`` are the ones that request was for."""
        if self._deadline is not None and self._clock() >= self._deadline:
            raise WriterInterrupted("the invocation's deadline came", hosts)
        if not self.dry_run and not self.store.extend(self._owner, self.lease):  # taken/expired
            raise WriterInterrupted("the lease was lost", hosts)

    def _apply(self, changes: list[Change], hosts: list[str]) -> int:
        """One change request, attempted up to ``max_attempts`` times; the lease extended
        (and the deadline checked) before every attempt after the first (the caller did it
        before the first)."""
        attempt = 1
        while True:
            try:
                return self.zone.apply(changes, dry_run=self.dry_run)
            except (ClientError, BotoCoreError) as exc:  # BatchRejected is not retried
                meaning = error_meaning(exc)
                if not meaning.retryable or attempt >= self.max_attempts:
                    raise
                why = meaning.code
            wait = self._jitter() * min(2.0 ** (attempt - 1), RETRY_MAX_WAIT)
            log.info("change request for %d host(s) not taken (%s); attempt %d in %.1f s",
                     len(hosts), why, attempt + 1, wait)
            self._sleep(wait)
            attempt += 1
            self.retries += 1
            self._may_go_on(hosts)

    def _write(self, wanted: list[str], stale: Mapping[str, set[str]]) -> WriteOutcome:
        outcome = WriteOutcome()
        loaded, applied = self.store.load([*wanted, *stale])
        published = {h: loaded[h] for h in wanted if h in loaded}  # verify-only: not planned
        for host in wanted:
            pub = published.get(host)
            if pub is None:
                outcome.skipped[host] = "no desired state stored for this host"
            elif pub.zone != self.zone.zone.name:
                outcome.skipped[host] = (f"published for zone {pub.zone}, this writer serves "
                                         f"{self.zone.zone.name}")
                published.pop(host)
        for host, why in outcome.skipped.items():
            log.error("host %s skipped: %s", host, why, extra={"host": host})
        outcome.hosts = len(published)
        now = self._clock()
        touched: set[str] = set()
        done: set[str] = set(outcome.skipped)
        to_read = [h for h, p in published.items() if needs_read(p, applied.get(h), now,
                                                                 self.verify_after)]
        # A host read in full below, or never written, needs no verify read of its own.
        self._verify({h: names for h, names in stale.items()
                      if h in applied and h not in to_read}, published, applied, now, outcome)
        try:
            if to_read:
                self._read(to_read, published, applied, now, outcome)
                touched.update(to_read)
            plans = self._plans(sorted(published), published, applied, now, outcome, touched)
            done.update(h for h in published if h not in plans)
            order = sorted(plans)
            for indexes in pack([plans[h] for h in order]):
                group = [order[i] for i in indexes]
                self._may_go_on(set(wanted) - done)
                try:
                    self._send(group, plans, published, applied, now, outcome, reread=False)
                except WriterInterrupted as exc:  # stopped within a bisection of the group
                    exc.unfinished.update(set(wanted) - done - set(group))
                    raise
                finally:
                    touched.difference_update(group)  # _send saved them, whatever happened
                done.update(group)
        finally:
            self._save(published, applied, touched)
        return outcome

    def _verify(self, stale: Mapping[str, set[str]], published: Mapping[str, Published],
                applied: dict[str, Applied], now: float, outcome: WriteOutcome) -> None:
        """Read the names verify hints named (one name-scoped read for all their hosts) and
        store what each host owns under them; what it owns under other names stays known."""
        if not stale:
            return
        hosts = sorted(stale)
        names = set().union(*stale.values())
        log.info("reading %d name(s) of %d host(s) whose record sets were deleted by someone "
                 "else", len(names), len(hosts), extra={"hosts": len(hosts)})
        self._read(hosts, published, applied, now, outcome, only=names)
        outcome.hosts_verified += len(hosts)
        if not self.dry_run:
            self.store.save_applied(self.zone.zone.name, [applied[h] for h in hosts])

    def _plans(self, hosts: list[str], published: Mapping[str, Published],
               applied: dict[str, Applied], now: float, outcome: WriteOutcome,
               touched: set[str]) -> dict[str, list[Change]]:
        """Each host's changes; hosts with nothing to do are recorded as applied."""
        plans: dict[str, list[Change]] = {}
        for host in hosts:
            known = applied.get(host)
            try:
                plan = plan_host(published[host], known.records if known else ())
                batches(plan)  # a change no request can carry would sink every batch
            except ForeignRecord as exc:
                outcome.failed[host] = str(exc)
                log.error("host %s published a record set it cannot own: %s", host, exc,
                          extra={"host": host})
                continue
            except ValueError as exc:  # route53.batches: beyond a request's limits
                outcome.failed[host] = str(exc)
                log.error("host %s: %s", host, exc, extra={"host": host})
                continue
            if plan:
                plans[host] = plan
            elif known is None or known.seq != published[host].seq:
                touched.add(host)  # nothing to change: it owns what it wants
                applied[host] = Applied(host, published[host].seq,
                                        known.records if known else (),
                                        known.verified if known else now)
        return plans

    def _send(self, group: list[str], plans: dict[str, list[Change]],
              published: Mapping[str, Published], applied: dict[str, Applied], now: float,
              outcome: WriteOutcome, reread: bool) -> None:
        changes = [c for h in group for c in plans[h]]
        if not changes:
            return
        previous = {h: applied.get(h) for h in group}
        if not self.dry_run:  # killed during the request: these hosts are read next time
            _mark_unknown(group, applied)
            self.store.save_applied(self.zone.zone.name, [applied[h] for h in group])
        try:
            outcome.change_requests += self._apply(changes, group)
        # ParamValidationError: botocore refused to send a record set the API cannot take
        # (nothing was sent); like a rejected batch, it must cost only the host behind it.
        except (BatchRejected, ParamValidationError) as exc:
            outcome.rejected += 1
            self._rejected(group, plans, published, applied, previous, now, outcome, reread,
                           exc)
            return
        outcome.changes += len(changes)
        for host in group:
            known = previous[host]
            applied[host] = Applied(host, published[host].seq,
                                    after(known.records if known else (), plans[host]),
                                    known.verified if known else now)
        if not self.dry_run:
            self.store.save_applied(self.zone.zone.name, [applied[h] for h in group])

    def _rejected(self, group: list[str], plans: dict[str, list[Change]],
                  published: Mapping[str, Published], applied: dict[str, Applied],
                  previous: Mapping[str, Applied | None], now: float, outcome: WriteOutcome,
                  reread: bool, exc: Exception) -> None:
        """Find the host(s) whose knowledge is wrong, without reading the others (a request
        is atomic: nothing of it landed, so their knowledge still holds).

        Route 53 names the record set it refused ("Tried to delete resource record set
        [name=..., set-identifier=...] but it was not found"): its owner is read (only the
        names of its changes), re-planned and sent again, the others are sent at once. When
        no host can be named (another message, botocore refusing to send), the group is
        halved; a single suspect host is read the same way. One more refusal after the read
        and that host is reported failed, so it never blocks the others.
        """
        for host in group:  # nothing landed: what was known still holds
            known = previous[host]
            if known is not None:
                applied[host] = known
        if len(group) > 1:
            named = _named_hosts(exc.named if isinstance(exc, BatchRejected) else (), group)
            steps: list[tuple[bool, list[str]]]  # (read first, hosts)
            if named:
                rest = [h for h in group if h not in named]
                log.warning("%s (%d hosts); sending the others again, reading %s", exc,
                            len(group), ", ".join(named))
                steps = ([(False, rest)] if rest else []) + [(True, [h]) for h in named]
            else:
                log.warning("%s (%d hosts); splitting them", exc, len(group))
                half = len(group) // 2
                steps = [(False, group[:half]), (False, group[half:])]
            for n, (read_first, part) in enumerate(steps):
                try:  # each a request of its own: the deadline and the lease hold for it too
                    self._may_go_on(part)
                    if read_first:
                        self._read_and_resend(part[0], plans, published, applied, now,
                                              outcome)
                    else:
                        self._send(part, plans, published, applied, now, outcome, False)
                except WriterInterrupted as stopped:  # saved unknown before: read next time
                    stopped.unfinished.update(h for _, later in steps[n + 1:] for h in later)
                    raise
            return
        host = group[0]
        if reread:
            outcome.failed[host] = str(exc)
            log.error("host %s: its changes cannot be applied: %s", host, exc,
                      extra={"host": host})
            if not self.dry_run:
                self.store.save_applied(self.zone.zone.name, [applied[host]])
            return
        log.warning("%s (host %s); reading its record sets and re-planning", exc, host)
        self._may_go_on(group)
        self._read_and_resend(host, plans, published, applied, now, outcome)

    def _read_and_resend(self, host: str, plans: dict[str, list[Change]],
                         published: Mapping[str, Published], applied: dict[str, Applied],
                         now: float, outcome: WriteOutcome) -> None:
        """Read the names of the host's refused changes (what it owns elsewhere was not in
        question), re-plan it and send it once more."""
        self._read([host], published, applied, now, outcome,
                   only={c.record.name for c in plans[host]})
        replanned = self._plans([host], published, applied, now, outcome, set())
        if host in replanned:
            plans[host] = replanned[host]
            self._may_go_on([host])
            self._send([host], plans, published, applied, now, outcome, True)
        elif not self.dry_run:
            self.store.save_applied(self.zone.zone.name, [applied[host]])

    def _read(self, hosts: list[str], published: Mapping[str, Published],
              applied: dict[str, Applied], now: float, outcome: WriteOutcome,
              only: set[str] | None = None) -> None:
        """Replace what is known of ``hosts`` with what the zone holds (their names only).

        ``only``: read just these names of a host already known, keeping what is known under
        its other names (and when it was last verified in full).
        """
        partial = only is not None and all(applied.get(h) is not None for h in hosts)
        names: set[str] = set(only or ()) if partial else set()
        if not partial:
            for host in hosts:
                names |= names_to_read(published[host], applied.get(host))
        wanted = set(hosts)
        owns = ownership.owned_by_hosts(wanted)
        # A name-scoped read costs about a request per name (more where names hold more than
        # a page); past the cost of listing the whole zone (>= 2), list the whole zone.
        full = False
        if len(names) >= 2:
            outcome.read_requests += 1
            full = len(names) >= -(-zone_record_count(self.zone) // MAX_ITEMS) + 1
        if full:
            records = [r for r in self._list_all(outcome) if owns(r)]
        else:
            read = owned_records_by_names(self.zone, names, owns)
            outcome.read_requests += read.requests
            records = read.records
        outcome.hosts_read += len(hosts)
        for host, owned in split_by_host(records, hosts).items():
            old = applied.get(host)
            if partial and old is not None:
                kept = tuple(r for r in old.records if r.name not in names)
                applied[host] = Applied(host, old.seq, kept + tuple(owned), old.verified)
            else:
                applied[host] = Applied(host, old.seq if old else 0, tuple(owned), now)

    def _list_all(self, outcome: WriteOutcome) -> list[RecordSet]:
        pages = self.zone.client.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=self.zone.zone.id, PaginationConfig={"PageSize": MAX_ITEMS})
        records: list[RecordSet] = []
        for page in pages:
            outcome.read_requests += 1
            records.extend(from_wire(w) for w in page["ResourceRecordSets"])
        return records

    def _save(self, published: Mapping[str, Published], applied: Mapping[str, Applied],
              touched: set[str]) -> None:
        if self.dry_run:
            return
        states = [applied[h] for h in sorted(touched) if h in applied and h in published]
        if states:
            self.store.save_applied(self.zone.zone.name, states)


def _mark_unknown(hosts: Iterable[str], applied: dict[str, Applied]) -> None:
    """Keep what is known of ``hosts``, dated never verified: their next write reads them."""
    for host in hosts:
        known = applied.get(host)
        applied[host] = Applied(host, known.seq if known else 0,
                                known.records if known else (), 0.0)


def _named_hosts(identifiers: Iterable[str], group: Iterable[str]) -> list[str]:
    """The hosts of ``group`` owning the record sets a refusal named, in its order."""
    members = set(group)
    named: list[str] = []
    for ident in identifiers:
        owner = ownership.parse_set_identifier(ident)
        if owner is not None and owner.kind is Kind.HOST and owner.host in members \
                and owner.host not in named:
            named.append(owner.host)
    return named


@dataclass
class HintBatch:
    """The hosts named by a batch of queue messages, and the messages that were not hints."""

    hosts: set[str] = field(default_factory=set)  # to plan
    verify: dict[str, set[str]] = field(default_factory=dict)  # host -> names to read
    bad: dict[str, str] = field(default_factory=dict)  # message id -> why
    host_of: dict[str, str] = field(default_factory=dict)  # message id -> host

    def messages_of(self, hosts: Iterable[str]) -> list[str]:
        """The ids of the messages that named one of ``hosts``."""
        wanted = set(hosts)
        return [mid for mid, host in self.host_of.items() if host in wanted]


def read_hints(bodies: Mapping[str, str], zone: str) -> HintBatch:
    """Hosts to write, from message bodies by message id; a bad message is reported, never
    allowed to hold up the others."""
    batch = HintBatch()
    for message_id, body in bodies.items():
        try:
            hint = parse_hint(body)
        except BadHint as exc:
            batch.bad[message_id] = str(exc)
            log.error("message %s is not an ecssd hint: %s", message_id, exc)
            continue
        if hint.zone != zone:
            batch.bad[message_id] = f"hint for zone {hint.zone}, this writer serves {zone}"
            log.error("message %s: hint for zone %s, this writer serves %s", message_id,
                      hint.zone, zone)
            continue
        if hint.verify:
            batch.verify.setdefault(hint.host, set()).update(hint.verify)
        else:
            batch.hosts.add(hint.host)
        batch.host_of[message_id] = hint.host
    return batch
