"""The refresher: interval and on-demand listings, the rate cap, deferred answers, failures."""

from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import EndpointConnectionError

from ecssd_agent.agent.settings import SettingsError
from ecssd_agent.core.model import RecordSet
from ecssd_agent.dns.config import load
from ecssd_agent.dns.refresh import Refresher
from ecssd_agent.dns.responder import Responder
from ecssd_agent.dns.view import unavailable
from tests.support.poll import wait_for

Z = "servicediscovery.internal."


class Source:
    """A fake zone listing: counts calls; can fail or block."""

    def __init__(self) -> None:
        self.records = [RecordSet(f"a.{Z}", "A", ("10.0.0.1",), 0)]
        self.calls = 0
        self.fail = False
        self.gate: threading.Event | None = None

    def __call__(self) -> list[RecordSet]:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        return list(self.records)


class Clock:
    """Real monotonic time plus a jump tests make instead of sleeping past min_interval."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def jump(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def world(clock):
    source = Source()
    responder = Responder(unavailable(Z))
    refresher = Refresher(Z, source, responder, interval=30.0, min_interval=0.3,
                          max_defer=0.5, clock=clock)
    refresher.start()
    wait_for(lambda: responder.view.ready, timeout=5, what="the first listing")
    yield source, responder, refresher
    refresher.stop()
    if source.gate is not None:
        source.gate.set()


def test_first_listing_makes_the_view_ready_and_an_unchanged_listing_keeps_it(world):
    source, responder, refresher = world
    view = responder.view
    assert view.describe().startswith("1 record set")
    assert refresher.refresh()
    assert responder.view is view  # nothing rebuilt
    source.records.append(RecordSet(f"b.{Z}", "A", ("10.0.0.2",), 0))
    refresher.refresh()
    assert responder.view is not view and len(responder.view.records) == 2


def test_a_flood_of_misses_lists_the_zone_at_most_once_per_min_interval(world):
    source, _, refresher = world
    before = source.calls
    answered = []
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        refresher.defer(lambda: answered.append(1))
    wait_for(lambda: not refresher._waiters, timeout=5, what="deferred answers")
    made = source.calls - before
    assert 1 <= made <= 1 + int(1.5 / 0.3) + 1, made
    assert refresher.refreshes["demand"] == made
    assert answered  # the deferred queries were answered


def test_a_deferred_query_is_answered_from_the_new_view(world, clock):
    source, responder, refresher = world
    clock.jump(0.35)  # past min_interval since the first listing
    source.records.append(RecordSet(f"new.{Z}", "A", ("10.0.0.9",), 0))
    seen = []
    assert refresher.defer(lambda: seen.append(responder.view.names))
    wait_for(lambda: seen, timeout=5, what="the deferred answer")
    assert b"\x03new" + responder.view.zone_key in seen[0]
    assert not refresher.defer(lambda: None)  # within min_interval: answer at once


def test_a_slow_listing_releases_waiting_queries_after_max_defer(world, clock):
    source, _, refresher = world
    clock.jump(0.35)
    source.gate = threading.Event()
    released = threading.Event()
    started = time.monotonic()
    assert refresher.defer(released.set)
    assert released.wait(5)
    assert 0.4 <= time.monotonic() - started < 3
    source.gate.set()


def test_a_failed_listing_keeps_serving_the_last_view_and_backs_off(world, clock):
    source, responder, refresher = world
    view = responder.view
    source.fail = True
    assert not refresher.refresh()
    assert responder.view is view and refresher.refreshes["failed"] == 1
    assert refresher._next_due - clock() > 30  # doubled
    source.fail = False
    assert refresher.refresh()


def test_settings_come_from_flags_over_environment_over_defaults():
    settings = load(["--port", "5300"], {"ECSSD_PORT": "5400", "ECSSD_REFRESH": "5",
                                         "ECSSD_DOMAIN": "corp.local"})
    assert (settings.port, settings.refresh, settings.domain) == (5300, 5.0, "corp.local")
    assert load([], {}).port == 5353 and load([], {}).listen == "127.0.0.1"
    assert load(["other.zone"], {}).domain == "other.zone"
    with pytest.raises(SettingsError):
        load([], {"ECSSD_PORT": "x"})
    with pytest.raises(SettingsError):
        load(["--refresh", "0"], {})
    with pytest.raises(SettingsError):
        load([], {"ECSSD_LOG_LEVEL": "loud"})
