"""The refresher within its budget: paced sweeps, lookups of missing names, deferred answers,
backoff; the zone copy's rules; the token bucket; the settings."""

from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ecssd_agent.agent.settings import SettingsError
from ecssd_agent.aws.request_budget import TokenBucket
from ecssd_agent.aws.route53 import ListPosition, Page
from ecssd_agent.core.model import RecordSet
from ecssd_agent.dns import wire
from ecssd_agent.dns.config import load
from ecssd_agent.dns.refresh import Refresher, lookup_name
from ecssd_agent.dns.responder import Responder
from ecssd_agent.dns.view import unavailable
from ecssd_agent.dns.zone_copy import ZoneCopy

Z = "servicediscovery.internal."


def a(name: str, ip: str = "10.0.0.1", ident: str | None = None) -> RecordSet:
    return RecordSet(f"{name}.{Z}" if name else Z, "A", (ip,), 60, set_identifier=ident,
                     weight=1 if ident else None)


class Clock:
    """Virtual time: the tests move it; nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A zone listed in pages of ``size`` in the order the records are kept (sorted by
    name, as Route 53 does); counts requests, can fail."""

    def __init__(self, records: list[RecordSet], bucket: TokenBucket, size: int = 3) -> None:
        self.records = records
        self.bucket = bucket
        self.size = size
        self.requests: list[ListPosition | None] = []
        self.error: Exception | None = None

    def page(self, start: ListPosition | None = None, max_items: int = 300) -> Page:
        # What the client's hook does; the refresher must only send when a token is there.
        assert self.bucket.try_take(), "a request without a token"
        self.requests.append(start)
        if self.error is not None:
            raise self.error
        ordered = sorted(self.records, key=lambda r: (r.name, r.type, r.set_identifier or ""))
        index = 0
        if start is not None:
            index = next((i for i, r in enumerate(ordered)
                          if (r.name, r.type, r.set_identifier or "")
                          >= (start.name, start.type or "", start.identifier or "")),
                         len(ordered))
        size = min(self.size, max_items)
        chunk = ordered[index:index + size]
        rest = ordered[index + size:]
        following = (ListPosition(rest[0].name, rest[0].type, rest[0].set_identifier)
                     if rest else None)
        return Page(tuple(chunk), following)


def throttling() -> ClientError:
    return ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                        "ResponseMetadata": {"HTTPStatusCode": 400}}, "ListResourceRecordSets")


def make(records: list[RecordSet], clock: Clock, size: int = 3, **kwargs: object):
    bucket = TokenBucket(1.0, 5, clock)
    source = Source(records, bucket, size)
    responder = Responder(unavailable(Z))
    refresher = Refresher(Z, source, responder, bucket, clock=clock, **kwargs)  # type: ignore[arg-type]
    return source, responder, refresher


def run_for(refresher: Refresher, clock: Clock, seconds: float) -> None:
    """Drive the refresher's loop in virtual time."""
    end = clock.now + seconds
    for _ in range(100_000):
        wait = refresher.step()
        if wait > 0:
            if clock.now + wait > end:
                clock.now = end
                return
            clock.now += wait
    raise AssertionError("the refresher never waits")


def key(name: str) -> bytes:
    return wire.name_key(name)


ZONE_RECORDS = [a(""), *[a(f"h{i:02d}", f"10.0.0.{i}") for i in range(20)]]


def test_the_first_sweep_lists_every_page_within_the_bucket_then_the_view_is_ready():
    clock = Clock()
    source, responder, refresher = make(list(ZONE_RECORDS), clock)  # 21 sets: 7 pages
    run_for(refresher, clock, 1.5)
    assert not responder.view.ready and len(source.requests) == 5 + 1  # the burst, then 1/s
    run_for(refresher, clock, 2.0)
    assert responder.view.ready and len(source.requests) == 7
    assert len(responder.view.records) == 21


def test_sweeps_never_exceed_the_rate_whatever_the_zone_size():
    clock = Clock()
    big = [a(""), *[a(f"h{i:03d}") for i in range(300)]]
    source, _, refresher = make(big, clock, interval=1.0)
    run_for(refresher, clock, 100.0)
    assert len(source.requests) <= 5 + 100 and len(source.requests) >= 100


def test_a_change_is_seen_by_the_next_sweep_and_a_gone_name_removed_at_its_end():
    clock = Clock()
    records = list(ZONE_RECORDS)
    _source, responder, refresher = make(records, clock, interval=10.0)
    run_for(refresher, clock, 5.0)
    assert responder.view.ready
    records[3] = a("h02", "10.9.9.9")
    records.remove(a("h05", "10.0.0.5"))
    run_for(refresher, clock, 20.0)
    view = responder.view
    assert a("h02", "10.9.9.9") in view.records and a("h02", "10.0.0.2") not in view.records
    assert all(r.name != f"h05.{Z}" for r in view.records)


def test_a_missing_name_is_looked_up_alone_and_its_query_answered_after():
    clock = Clock()
    records = list(ZONE_RECORDS)
    source, responder, refresher = make(records, clock, interval=1000.0)
    run_for(refresher, clock, 10.0)
    records.append(a("new", "10.1.1.1"))
    answered = []
    assert refresher.defer(key(f"new.{Z}"), lambda: answered.append(responder.view.records))
    before = len(source.requests)
    refresher.step()
    assert len(source.requests) == before + 1
    assert source.requests[-1] == ListPosition(f"new.{Z}")
    assert answered and a("new", "10.1.1.1") in answered[0]
    # Looked up a moment ago: answered at once, no request.
    assert not refresher.defer(key(f"new.{Z}"), lambda: None)


def test_a_name_that_is_still_missing_is_not_looked_up_again_within_the_negative_ttl():
    clock = Clock()
    source, _, refresher = make(list(ZONE_RECORDS), clock, interval=1000.0, negative_ttl=30.0)
    run_for(refresher, clock, 10.0)
    assert refresher.defer(key(f"typo.{Z}"), lambda: None)
    run_for(refresher, clock, 1.0)
    lookups = [r for r in source.requests if r is not None and r.type is None]
    assert lookups == [ListPosition(f"typo.{Z}")]
    assert not refresher.defer(key(f"typo.{Z}"), lambda: None)
    clock.now += 31
    assert refresher.defer(key(f"typo.{Z}"), lambda: None)


def test_a_flood_of_missing_names_spends_at_most_the_lookup_share_and_sweeps_go_on():
    clock = Clock()
    source, _, refresher = make(list(ZONE_RECORDS), clock, interval=1.0)
    run_for(refresher, clock, 10.0)
    before = len(source.requests)
    n = 0
    for _ in range(600):  # 60 s, ten new names every 0.1 s
        for _ in range(10):
            n += 1
            refresher.defer(key(f"missing-{n}.{Z}"), lambda: None)
        run_for(refresher, clock, 0.1)
        for name, pending in list(refresher._pending.items()):  # the timers, in virtual time
            if not pending.started:
                refresher._release(name, pending)
    made = source.requests[before:]
    lookups = [r for r in made if r is not None and r.name.startswith("missing-")]
    sweeps = len(made) - len(lookups)
    assert len(made) <= 5 + 60
    assert len(lookups) <= 2 + 0.5 * 60 + 1
    assert sweeps >= 0.5 * 60 - 5


def test_names_that_are_not_plain_host_names_are_never_looked_up():
    assert lookup_name(key(f"calc.{Z}")) == f"calc.{Z}"
    assert lookup_name(key(f"_calc._tcp.{Z}")) == f"_calc._tcp.{Z}"
    assert lookup_name(b"\x03a b" + key(Z)) is None
    assert lookup_name(key(f"*.{Z}")) is None
    assert lookup_name(b"\x02a\x00" + key(Z)) is None
    clock = Clock()
    _, _, refresher = make(list(ZONE_RECORDS), clock)
    assert not refresher.defer(b"\x03a\xffb" + key(Z), lambda: None)


def test_waiting_queries_are_answered_after_max_defer_when_the_lookup_cannot_start():
    clock = Clock()
    source, _, refresher = make(list(ZONE_RECORDS), clock, max_defer=0.2)
    source.error = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    released = threading.Event()
    started = time.monotonic()
    assert refresher.defer(key(f"slow.{Z}"), released.set)  # nothing drives the loop
    assert released.wait(5)
    assert time.monotonic() - started >= 0.15


def test_throttling_holds_every_path_and_other_failures_pause_reads():
    clock = Clock()
    source, responder, refresher = make(list(ZONE_RECORDS), clock, interval=1.0)
    run_for(refresher, clock, 10.0)
    view = responder.view
    source.error = throttling()
    refresher.bucket.throttled()  # what the client hook does on a throttled answer
    before = len(source.requests)
    refresher.defer(key(f"new.{Z}"), lambda: None)
    run_for(refresher, clock, 1.9)
    assert len(source.requests) == before  # held: neither the sweep nor the lookup
    source.error = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    run_for(refresher, clock, 1.2)  # the hold (2 s), then a token's refill (1 s)
    assert len(source.requests) == before + 1 and refresher.stats["failed"] == 1
    run_for(refresher, clock, 0.5)  # paused for `interval` after a failure
    assert len(source.requests) == before + 1 and responder.view is view
    source.error = None
    run_for(refresher, clock, 30.0)
    assert refresher.stats["sweeps"] > 2


def test_a_listing_that_does_not_advance_is_abandoned():
    clock = Clock()
    source, _, refresher = make(list(ZONE_RECORDS), clock)
    stuck = ListPosition(f"h03.{Z}", "A")
    starts: list[ListPosition | None] = []

    def page(start: ListPosition | None = None, max_items: int = 300) -> Page:
        starts.append(start)
        return Page((a("h03"),), stuck)

    source.page = page  # type: ignore[method-assign]
    run_for(refresher, clock, 3.0)
    assert starts == [None, stuck]  # then nothing until the next sweep is due
    assert not refresher.copy.complete and not refresher.copy.sweeping


# --- the zone copy ---------------------------------------------------------------------------

def test_a_name_cut_by_a_page_boundary_is_applied_whole_from_the_next_page():
    copy = ZoneCopy()
    group = [a("svc", f"10.0.0.{i}", ident=f"s{i}") for i in range(4)]
    copy.start_sweep()
    copy.sweep_page(Page((a(""), *group[:2]), ListPosition(f"svc.{Z}", "A", "s2")))
    assert copy.names(f"svc.{Z}") == ()  # not known whole yet
    copy.sweep_page(Page((*group[1:], a("zz")), None))  # a server that repeats one: once
    copy.end_sweep()
    assert len(copy.names(f"svc.{Z}")) == 4 and copy.complete


def test_a_lookup_that_begins_elsewhere_proves_the_name_absent_and_keeps_the_rest():
    copy = ZoneCopy()
    copy.start_sweep()
    copy.sweep_page(Page((a(""), a("old"), a("x")), None))
    copy.end_sweep()
    copy.lookup(f"old.{Z}", [Page((a("x", "10.0.0.2"),), None)])
    assert copy.names(f"old.{Z}") == () and copy.names(f"x.{Z}") == (a("x", "10.0.0.2"),)


def test_a_name_found_by_a_lookup_during_a_sweep_survives_the_end_of_that_sweep():
    copy = ZoneCopy()
    copy.start_sweep()
    copy.sweep_page(Page((a(""),), None))
    copy.end_sweep()
    copy.start_sweep()
    copy.sweep_page(Page((a(""),), ListPosition(f"b.{Z}")))  # passed before "new" existed
    copy.lookup(f"new.{Z}", [Page((a("new"),), None)])
    copy.sweep_page(Page((a("b"),), None))
    copy.end_sweep()
    assert copy.names(f"new.{Z}") == (a("new"),)


# --- the token bucket ------------------------------------------------------------------------

def test_token_bucket_bursts_then_refills_and_a_throttle_holds_it():
    clock = Clock()
    bucket = TokenBucket(1.0, 3, clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time() == pytest.approx(1.0)
    clock.now += 1.0
    assert bucket.try_take() and not bucket.try_take()
    clock.now += 10.0
    assert bucket.wait_time() == 0.0
    assert bucket.throttled() == 2.0
    assert bucket.wait_time() == pytest.approx(3.0)  # the hold, then one token's refill
    clock.now += 3.0
    assert bucket.try_take()
    assert bucket.throttled() == 4.0  # in a row: doubled
    bucket.succeeded()
    assert bucket.throttled() == 2.0


def test_take_blocks_until_a_token_is_there():
    bucket = TokenBucket(20.0, 1)
    assert bucket.take()
    started = time.monotonic()
    assert bucket.take(timeout=5)
    assert time.monotonic() - started >= 0.03
    assert not bucket.take(timeout=0.01)


# --- settings ------------------------------------------------------------------------------

def test_settings_come_from_flags_over_environment_over_defaults():
    settings = load(["--port", "5300"], {"ECSSD_PORT": "5400", "ECSSD_REFRESH": "5",
                                         "ECSSD_DOMAIN": "corp.local"})
    assert (settings.port, settings.refresh, settings.domain) == (5300, 5.0, "corp.local")
    defaults = load([], {})
    assert defaults.port == 5353 and defaults.listen == "127.0.0.1"
    assert (defaults.route53_rate, defaults.route53_burst) == (1.0, 5)
    assert load(["other.zone"], {}).domain == "other.zone"
    with pytest.raises(SettingsError):
        load([], {"ECSSD_PORT": "x"})
    with pytest.raises(SettingsError):
        load(["--refresh", "0"], {})
    with pytest.raises(SettingsError):
        load(["--route53-rate", "0"], {})
    with pytest.raises(SettingsError):
        load([], {"ECSSD_LOG_LEVEL": "loud"})
