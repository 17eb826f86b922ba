"""The Docker container event stream, kept connected: events in, reconnects handled here.

Events are only hints. The daemon never trusts an event's content for registration: each
event marks a container "dirty" and the daemon asks the engine for the container's current
state (level-triggered), so a lost, duplicated or reordered event cannot leave a wrong record.
What this module guarantees is the other half: that the daemon learns when the stream was
broken (events may have been missed), so that it re-lists every container after a reconnect.

The stream runs in its own thread with its own API client: the long-lived streaming response
must not share a connection pool with the daemon's inspect calls.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import docker
import docker.errors
import requests

log = logging.getLogger(__name__)

#: Container lifecycle actions that can change what a container publishes. Everything else
#: (create, exec_*, attach, resize, top, ...) is filtered out by the engine: health checks
#: alone would otherwise wake the daemon every few seconds per container.
LIFECYCLE_ACTIONS: tuple[str, ...] = (
    "start", "restart", "kill", "stop", "die", "oom", "destroy",
    "pause", "unpause", "rename", "update",
)  # fmt: skip

#: Signals whose ``kill`` means "this container is going away" (SIGINT, SIGQUIT, SIGKILL,
#: SIGTERM). Others (SIGHUP, SIGUSR1, ...) are commonly sent to reload or rotate logs.
TERMINATING_SIGNALS = frozenset({"2", "3", "9", "15", "SIGINT", "SIGQUIT", "SIGKILL", "SIGTERM",
                                 "INT", "QUIT", "KILL", "TERM"})

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class ContainerEvent:
    """One container event as the daemon needs it."""

    container_id: str
    action: str  # "start", "die", "kill", ...
    attributes: Mapping[str, str] = field(default_factory=dict)  # labels, name, signal, ...
    time_ns: int = 0  # when the engine saw it (0 if it did not say)

    @property
    def ends_container(self) -> bool:
        """kill with a terminating signal, or stop: the container is on its way out."""
        if self.action == "stop":
            return True
        return self.action == "kill" and self.attributes.get("signal", "").upper() in TERMINATING_SIGNALS

    @property
    def starts_container(self) -> bool:
        return self.action in ("start", "restart", "unpause")


def parse_event(raw: Mapping[str, Any]) -> ContainerEvent | None:
    """A decoded ``/events`` message -> ContainerEvent; None for non-container messages."""
    if raw.get("Type", "container") != "container":
        return None
    actor = raw.get("Actor") or {}
    container_id = actor.get("ID") or raw.get("id") or ""
    action = str(raw.get("Action") or raw.get("status") or "")
    if not container_id or not action:
        return None
    # "health_status: healthy", "exec_start: sh" -> the verb before the colon
    action = action.split(":", 1)[0].strip()
    time_ns = raw.get("timeNano") or int(raw.get("time") or 0) * 1_000_000_000
    attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    return ContainerEvent(container_id, action, attributes, int(time_ns))


class EventSource(Protocol):
    """What the daemon needs of an event stream (tests hand it their own)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 2.0) -> None: ...


def make_api_client(base_url: str | None, timeout: int = 30) -> Any:
    """A low-level client for ``base_url``, or for DOCKER_HOST / the local socket."""
    if base_url:
        return docker.APIClient(base_url=base_url, timeout=timeout)
    return docker.APIClient(timeout=timeout, **docker.utils.kwargs_from_env())


class EventStream:
    """Follows the engine's container events in a thread, reconnecting with capped backoff.

    Callbacks run in the stream's thread and must be quick (the daemon only marks state):
    ``on_connect()`` after each successful (re)subscription, ``on_event(event)`` per event,
    ``on_disconnect(reason)`` when the stream breaks or cannot be opened.
    """

    def __init__(
        self,
        base_url: str | None,
        on_event: Callable[[ContainerEvent], None],
        on_connect: Callable[[], None],
        on_disconnect: Callable[[str], None],
        *,
        actions: Iterable[str] = LIFECYCLE_ACTIONS,
        client_factory: Callable[[str | None], Any] = make_api_client,
        backoff_min: float = BACKOFF_MIN,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.base_url = base_url
        self.on_event = on_event
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.actions = list(actions)
        self.client_factory = client_factory
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.reconnects = 0  # successful connections after the first one
        self._last_ns = 0  # engine time of the last event delivered
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Close the stream (unblocks the reader) and wait briefly for the thread."""
        self._stopping.set()
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            _close(stream)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = self.backoff_min
        connected_once = False
        while not self._stopping.is_set():
            client: Any = None
            try:
                client = self.client_factory(self.base_url)
                stream = client.events(decode=True, since=self._since(),
                                       filters={"type": "container", "event": self.actions})
            except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
                _close_client(client)
                self.on_disconnect(f"cannot subscribe to Docker events: {exc}")
                log.warning("cannot subscribe to Docker events (retrying in %.1fs): %s", delay, exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            with self._lock:
                if self._stopping.is_set():
                    _close(stream)
                    _close_client(client)
                    return
                self._stream = stream
            if connected_once:
                self.reconnects += 1
            connected_once = True
            delay = self.backoff_min
            log.info("following Docker container events")
            self.on_connect()
            reason = self._read(stream)
            with self._lock:
                self._stream = None
            _close(stream)
            _close_client(client)
            if self._stopping.is_set():
                return
            self.on_disconnect(reason)
            log.warning("Docker event stream ended (%s); reconnecting in %.1fs", reason, delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, self.backoff_max)

    def _since(self) -> str | None:
        """Resume after the last event seen: the engine replays what happened while we were
        away (from its in-memory log; a restarted engine's own startup events included, such
        as the restart of its ``--restart always`` containers). None on the first connect."""
        if not self._last_ns:
            return None
        seconds, nanos = divmod(self._last_ns, 1_000_000_000)
        return f"{seconds}.{nanos:09d}"

    def _read(self, stream: Iterable[Any]) -> str:
        """Deliver events until the stream ends; returns why it ended."""
        try:
            for raw in stream:
                if not isinstance(raw, dict):
                    continue
                event = parse_event(raw)
                if event is not None:
                    self._last_ns = max(self._last_ns, event.time_ns)
                    self.on_event(event)
        except (docker.errors.DockerException, requests.RequestException, OSError,
                ValueError) as exc:
            return f"stream error: {exc}"
        return "the engine closed the stream"


def _close(stream: Any) -> None:
    with contextlib.suppress(OSError, AttributeError, docker.errors.DockerException):
        stream.close()


def _close_client(client: Any) -> None:
    if client is not None:
        with contextlib.suppress(OSError):
            client.close()
