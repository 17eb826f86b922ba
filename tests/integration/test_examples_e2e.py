"""End to end: the examples in real containers, found through real SRV records.

One demo world for the module (examples/demo/run.py: a moto server, the session's Docker
engine, ``ecssd-agent``, ``ecssd-dns``, two calc, two time and one portal container), then:
the portal on 127.0.0.1 answers through SRV discovery; Debian's chromium, driven over the
DevTools protocol, types a formula and a layout into the page and sees the answers (with a
screenshot in artifacts/); stopping one calc container keeps the portal answering, stopping
both gives 503, starting one again recovers.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker.errors
import pytest

from examples.demo.base import offline_rootfs_cached
from examples.demo.run import Demo, Options, http_get
from tests.support.dockerd import DockerEngine
from tests.support.env import is_ci, skip_or_fail
from tests.support.host import pids_with_cmdline
from tests.support.poll import wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


pytestmark = [
    pytest.mark.python_image,
    # The offline base needs the debootstrap'd rootfs: ~40 s the first time, cached after.
    pytest.mark.skipif(not (is_ci() or os.environ.get("ECSSD_TEST_PYTHON_IMAGE") == "1"
                            or offline_rootfs_cached()),
                       reason="builds the offline python base (debootstrap, ~40 s once); runs with "
                              "make test, on CI, with ECSSD_TEST_PYTHON_IMAGE=1, or once it is cached"),
]


@pytest.fixture(scope="module")
def demo(docker_engine: DockerEngine) -> Iterator[Demo]:
    world = Demo(Options(exit_after_check=True, offline=True, docker_host=docker_engine.base_url,
                         portal_port=0), out=io.StringIO())
    try:
        world.start()
        yield world
    finally:
        world.close()


def calc(demo: Demo, formula: str) -> tuple[int, Any]:
    return http_get(demo.portal_port, "/calc/" + quote(formula, safe=""))


def dns_instances(demo: Demo, name: str) -> list[Any]:
    from ecssd_agent.dns.client import NoInstances, ServiceResolver

    resolver = ServiceResolver(demo.options.domain, f"127.0.0.1:{demo.dns_port}")
    try:
        return resolver.resolve(name)
    except NoInstances:
        return []


def test_portal_answers_through_srv_discovery(demo: Demo) -> None:
    result = demo.check()
    assert result.ok, result.failures
    calc_ports = {demo.published_port(f"calc-{i}") for i in (1, 2)}
    assert {i.port for i in dns_instances(demo, "_calc._tcp")} == calc_ports
    seen = set()
    for _ in range(20):
        status, body = calc(demo, "2^10")
        assert (status, body["value"]) == (200, 1024)
        seen.add(body["served_by"]["port"])
    assert seen <= calc_ports
    status, body = http_get(demo.portal_port, "/time/" + quote("2006-01-02 15:04 MST", safe=""))
    assert status == 200 and body["value"].endswith(" UTC")
    assert body["served_by"]["port"] in {demo.published_port(f"time-{i}") for i in (1, 2)}
    status, body = calc(demo, "1/0")
    assert (status, body["error"]) == (400, "division by zero")


def test_images_run_as_non_root_and_report_healthy(demo: Demo) -> None:
    assert demo.docker is not None
    for name in ("calc-1", "time-1", "portal"):
        container = demo.docker.containers.get(demo.containers[name])
        assert container.attrs["Config"]["User"] == "10001:10001"

        def healthy(container: Any = container) -> bool:
            container.reload()
            return bool(container.attrs["State"]["Health"]["Status"] == "healthy")

        wait_for(healthy, timeout=60, what=f"{name}'s HEALTHCHECK to pass")


# --- a real browser -------------------------------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client (test extra)

        self.ws = websocket.create_connection(ws_url, timeout=20, suppress_origin=True)
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def key(self, key: str, code: str, vk: int, text: str = "", modifiers: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            params: dict[str, Any] = {"type": kind, "key": key, "code": code,
                                      "windowsVirtualKeyCode": vk, "modifiers": modifiers}
            if text and kind == "keyDown":
                params["text"] = text
            self.call("Input.dispatchKeyEvent", **params)

    def type_text(self, text: str) -> None:
        """One key press per character, like a person typing."""
        for char in text:
            self.call("Input.dispatchKeyEvent", type="keyDown", key=char, text=char)
            self.call("Input.dispatchKeyEvent", type="keyUp", key=char)

    def type_into(self, element_id: str, text: str) -> None:
        self.evaluate(f"document.getElementById({json.dumps(element_id)}).focus()")
        self.key("a", "KeyA", 65, modifiers=2)  # Ctrl+A selects the current value...
        self.key("Backspace", "Backspace", 8)    # ...and Backspace deletes it
        self.type_text(text)
        self.key("Enter", "Enter", 13, text="\r")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(demo: Demo) -> Iterator[DevTools]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        skip_or_fail("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="ecssd-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        url = f"http://127.0.0.1:{demo.portal_port}/"
        proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions",
             "--disable-default-apps", "--disable-domain-reliability", "--mute-audio",
             "--window-size=1000,900", f"--user-data-dir={profile}",
             # Rule zero: no name lookup leaves the machine, whatever chromium tries.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        tools: DevTools | None = None
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            wait_for(lambda: port_file.exists() and port_file.read_text().strip(), timeout=60,
                     what="chromium's DevTools port")
            port = int(port_file.read_text().split()[0])

            def page() -> str | None:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                            timeout=5) as response:
                    targets = json.load(response)
                return next((t["webSocketDebuggerUrl"] for t in targets
                             if t.get("type") == "page" and t.get("url") == url), None)

            tools = DevTools(wait_for(page, timeout=30, what="the portal page in chromium",
                                      ignore=(OSError,)))
            wait_for(lambda: tools is not None and tools.evaluate(
                "document.readyState === 'complete' && !!document.getElementById('formula')"),
                timeout=30, what="the portal page to load")
            yield tools
        finally:
            if tools is not None:
                tools.close()
            # The whole process group: chromium's renderer and utility processes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            wait_for(lambda: not pids_with_cmdline(profile.encode()), timeout=15,
                     what="chromium's processes to exit")


def result_of(tools: DevTools, box: str) -> dict[str, str] | None:
    state = tools.evaluate(
        f"(() => {{ const b = document.getElementById('{box}'); "
        "return {state: b.dataset.state || '', text: b.innerText}; })()")
    return state if state and state.get("state") in ("ok", "error") else None


def test_browser_types_a_formula_and_sees_the_answer(demo: Demo, browser: DevTools) -> None:
    browser.type_into("formula", "(1+2)*3^2 - 0.5")
    shown = wait_for(lambda: result_of(browser, "calc-result"), timeout=30,
                     what="the calc answer on the page")
    assert shown["state"] == "ok", shown
    assert shown["text"].splitlines()[0] == "26.5"
    assert "served by ip-127-0-0-1." in shown["text"]
    assert browser.evaluate("document.getElementById('formula').value") == "(1+2)*3^2 - 0.5"

    browser.type_into("layout", "2006 Jan _2 MST")
    shown_time = wait_for(lambda: result_of(browser, "time-result"), timeout=30,
                          what="the time answer on the page")
    assert shown_time["state"] == "ok", shown_time
    assert shown_time["text"].splitlines()[0].endswith(" UTC")

    browser.type_into("formula", "1/0")
    wait_for(lambda: "division by zero" in (result_of(browser, "calc-result") or {}).get(
        "text", ""), timeout=30, what="the error on the page")

    browser.type_into("formula", "(2+2)*3")
    wait_for(lambda: (result_of(browser, "calc-result") or {}).get("text", "").startswith("12"),
             timeout=30, what="the second answer on the page")
    png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "portal-browser.png").write_bytes(png)


# --- failover --------------------------------------------------------------------------


def test_failover_no_instance_and_recovery(demo: Demo) -> None:
    assert demo.docker is not None
    calc1 = demo.docker.containers.get(demo.containers["calc-1"])
    calc2 = demo.docker.containers.get(demo.containers["calc-2"])
    try:
        calc1.stop(timeout=5)
        # At once, while its record may still be published: the portal skips the dead one.
        for _ in range(10):
            status, body = calc(demo, "6*7")
            assert status == 200 and body["value"] == 42
            assert body["served_by"]["port"] == demo.published_port("calc-2")
        wait_for(lambda: len(dns_instances(demo, "_calc._tcp")) == 1, timeout=30,
                 what="the stopped container's record to go")

        calc2.stop(timeout=5)
        wait_for(lambda: calc(demo, "1+1")[0] == 503, timeout=30, what="503 with no calc")
        wait_for(lambda: calc(demo, "1+1")[1].get("error")
                 == "no instance of the calc service (_calc._tcp) was found", timeout=30,
                 what="the records to be gone")
        assert http_get(demo.portal_port, "/time/15:04")[0] == 200  # time is unaffected

        calc1.start()
        def answered() -> Any:
            status, body = calc(demo, "2+3")
            return body if status == 200 else None

        body = wait_for(answered, timeout=60, what="the portal to recover")
        assert body["value"] == 5
        assert body["served_by"]["port"] == demo.published_port("calc-1")
    finally:
        for container in (calc1, calc2):
            with contextlib.suppress(docker.errors.DockerException):
                container.reload()
                if container.status != "running":
                    container.start()
