"""``python3 -m examples.demo``: the whole system on one machine, offline, with one command.

What it starts, in order, and stops in reverse on Ctrl-C (SIGINT/SIGTERM):

1. a moto server on 127.0.0.1 playing Route 53, ECS and EC2, holding the private hosted
   zone, a cluster, and this machine as container instance ``ip-127-0-0-1`` (world.py);
2. a Docker engine: one that answers, else a private dockerd (engine.py);
3. the base image (python:3.12-slim, else one built offline from Debian packages) and the
   three example images, built from their Dockerfiles (base.py, examples/images.py);
4. ``ecssd-agent`` as a daemon watching that engine, and ``ecssd-dns`` serving the zone;
5. two calc, two time and one portal container, with the environment of their task
   definitions (examples/*/taskdef.json) and ports published on 127.0.0.1; the portal on
   the host network, so it reaches the DNS server and the published ports on 127.0.0.1;
6. one health sweep (the Lambda's handler, against moto), then checks: the zone's records,
   a dig-style SRV answer, and a calc and a time request made through the portal.

``--exit-after-check`` stops after the checks (exit status 0 only if they all passed), for
tests and CI.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar
from urllib.parse import quote

import docker
import docker.errors

from ecssd_agent.core import ownership
from examples import images
from examples.demo import base
from examples.demo.engine import Engine, connect
from examples.demo.world import World, create_world

log = logging.getLogger("examples.demo")

EXAMPLES = Path(__file__).resolve().parent.parent
#: Starting a container whose published port another engine took meanwhile is retried.
PORT_RACE_ATTEMPTS = 5
DEMO_LABEL = "org.ecssd.demo"
DEFAULT_DOMAIN = "servicediscovery.internal"
START_TIMEOUT = 120.0
T = TypeVar("T")


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``check`` until it returns something truthy; DemoError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay, last = 0.05, ""
    while True:
        try:
            result = check()
        except ignore as exc:
            result, last = None, f" (last error: {exc})"
        if result:
            return result
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}{last}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def free_port(kinds: Sequence[int] = (socket.SOCK_STREAM,)) -> int:
    """A port free on 127.0.0.1 for every socket kind in ``kinds`` (TCP, UDP)."""
    for _ in range(50):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket(socket.AF_INET, kinds[0]))
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                for kind in kinds[1:]:
                    stack.enter_context(socket.socket(socket.AF_INET, kind)).bind(
                        ("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise DemoError("no free port on 127.0.0.1")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def console_script(name: str, module: str) -> list[str]:
    """The installed console script next to this interpreter, else ``python -m module``."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", module]


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    """GET http://127.0.0.1:port/path -> (status, parsed JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, body.decode(errors="replace")


def taskdef_environment(service: str) -> dict[str, str]:
    """The container environment of ``examples/<service>/taskdef.json``."""
    definition = json.loads((EXAMPLES / service / "taskdef.json").read_text())
    container = definition["containerDefinitions"][0]
    return {item["name"]: item["value"] for item in container.get("environment", [])}


def taskdef_port(service: str) -> int:
    definition = json.loads((EXAMPLES / service / "taskdef.json").read_text())
    return int(definition["containerDefinitions"][0]["portMappings"][0]["containerPort"])


@dataclass
class Options:
    exit_after_check: bool = False
    offline: bool = False
    base_image: str | None = None
    docker_host: str | None = None
    domain: str = DEFAULT_DOMAIN
    portal_port: int = 8080
    dns_port: int = 0
    calc_instances: int = 2
    time_instances: int = 2
    keep_logs: bool = False


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs: killing it", self.name, timeout)
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


@dataclass
class Result:
    """What the checks found; ``ok`` when every one passed."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class Demo:
    """Starts everything (``start``), checks it (``check``), removes it (``close``)."""

    def __init__(self, options: Options, out: IO[str] = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.run_id = uuid.uuid4().hex[:8]
        self.stack = contextlib.ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ecssd-demo-{self.run_id}-"))
        # Read before the AWS environment is made safe (which drops DOCKER_HOST).
        self.original_env = dict(os.environ)
        self.env: dict[str, str] = {}
        self.moto_url = ""
        self.world: World | None = None
        self.engine: Engine | None = None
        self.docker: docker.DockerClient | None = None
        self.containers: dict[str, str] = {}  # name -> id
        self.agent: Process | None = None
        self.dns: Process | None = None
        self.dns_port = 0
        self.portal_port = 0
        self.timings: dict[str, float] = {}
        self.sweep_summary: dict[str, Any] = {}

    # --- output --------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        log.info("%s ...", what)
        yield
        self.timings[what] = time.monotonic() - started
        log.info("%s: done in %.1fs", what, self.timings[what])

    # --- start ---------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        with self.step("moto server (Route 53, ECS, EC2)"):
            self._start_moto()
        with self.step("Docker engine"):
            self.engine = connect(self.options.docker_host, self.original_env)
            self.stack.callback(self.engine.close)
            self.docker = docker.DockerClient(base_url=self.engine.url, version="auto",
                                              timeout=300)
            self.stack.callback(self.docker.close)
        with self.step("images"):
            base_image = base.base_image(self.docker, self.options.base_image,
                                         self.options.offline)
            log.info("base image: %s", base_image)
            for service in images.SERVICES:
                images.build(self.docker, service, base_image)
        with self.step("agent and DNS server"):
            self._start_agent()
            self._start_dns()
        with self.step("containers"):
            self._start_containers()
        with self.step("discovery (records in Route 53 and DNS)"):
            self._wait_for_discovery()
        with self.step("health sweep"):
            self._sweep()
        self.timings["total"] = time.monotonic() - started

    def _start_moto(self) -> None:
        from tests.support.env import apply_safe_env
        from tests.support.moto_server import start_moto_server

        apply_safe_env()  # fake credentials, no IMDS, no real AWS: only the moto server
        server = start_moto_server()
        self.stack.callback(server.stop)
        self.moto_url = server.url
        os.environ["AWS_ENDPOINT_URL"] = server.url
        self.env = {**os.environ}
        self.world = create_world(server.client, self.options.domain)

    def _spawn(self, name: str, command: list[str]) -> Process:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                     stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        process = Process(name, popen, log_path)
        self.stack.callback(process.stop)
        return process

    def _agent_command(self, *mode: str) -> list[str]:
        assert self.world is not None and self.engine is not None
        return [*console_script("ecssd-agent", "ecssd_agent"),
                "--hostname", self.world.host_name, "--host-ip", self.world.host_ip,
                "--hosted-zone-id", self.world.zone_id, "--docker-host", self.engine.url,
                "--routing", "multivalue", *mode, self.world.domain]

    def _start_agent(self) -> None:
        self.agent = self._spawn("agent", self._agent_command(
            "--resync", "60", "--ecs-agent-url", "http://127.0.0.1:9"))

    def _remove_records(self) -> None:
        """The demo's host is going away: ``--remove`` deletes what it owns (a stopped agent
        keeps its records, because an agent stopping does not say its host is leaving)."""
        result = subprocess.run(self._agent_command("--remove"), env=self.env,
                                capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log.warning("ecssd-agent --remove exited %s:\n%s", result.returncode,
                        result.stderr[-2000:])

    def _start_dns(self) -> None:
        assert self.world is not None
        self.dns_port = self.options.dns_port or free_port((socket.SOCK_DGRAM,
                                                            socket.SOCK_STREAM))
        self.dns = self._spawn("dns", [
            *console_script("ecssd-dns", "ecssd_agent.dns.server"),
            "--hosted-zone-id", self.world.zone_id, "--listen", "127.0.0.1",
            "--port", str(self.dns_port), "--refresh", "1", self.world.domain])
        self.env["ECSSD_DNS"] = f"127.0.0.1:{self.dns_port}"

    def _run(self, name: str, image: str, environment: dict[str, str],
             **kwargs: Any) -> str:
        assert self.docker is not None
        full_name = f"ecssd-demo-{self.run_id}-{name}"
        for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
            try:
                container = self.docker.containers.run(
                    image, detach=True, name=full_name, environment=environment,
                    labels={DEMO_LABEL: self.run_id, "org.ecssd.demo.name": name}, **kwargs)
                break
            except docker.errors.APIError as exc:
                # Another engine on this machine (a second demo, a test run) may hold the host
                # port this engine picked: the engine picks the next one on a new attempt.
                if "address already in use" not in str(exc) or attempt == PORT_RACE_ATTEMPTS:
                    raise
                log.info("%s: host port taken by another engine, starting it again", name)
                with contextlib.suppress(docker.errors.APIError):
                    self.docker.containers.get(full_name).remove(force=True)
        self.containers[name] = str(container.id)
        return str(container.id)

    def _start_containers(self) -> None:
        assert self.world is not None
        self.stack.callback(self._remove_containers)
        instance = {"INSTANCE_ID": self.world.instance_id}
        for service, count in (("calc", self.options.calc_instances),
                               ("time", self.options.time_instances)):
            port = taskdef_port(service)
            for index in range(1, count + 1):
                self._run(f"{service}-{index}", images.image_name(service),
                          {**taskdef_environment(service), **instance},
                          ports={f"{port}/tcp": ("127.0.0.1", None)})
        wanted = self.options.portal_port
        self.portal_port = wanted if wanted and port_is_free(wanted) else free_port()
        if wanted and self.portal_port != wanted:
            log.info("port %d is taken: the portal uses %d", wanted, self.portal_port)
        self._run("portal", images.image_name("portal"), {
            **taskdef_environment("portal"), **instance,
            "PORT": str(self.portal_port), "HOST": "127.0.0.1",
            "ECSSD_DNS": f"127.0.0.1:{self.dns_port}",
            "ECSSD_DOMAIN": self.world.domain}, network_mode="host")

    def published_port(self, name: str) -> int:
        """The host port of container ``name``'s service port."""
        assert self.docker is not None
        container = self.docker.containers.get(self.containers[name])
        service = name.rsplit("-", 1)[0]
        bindings = container.attrs["NetworkSettings"]["Ports"][f"{taskdef_port(service)}/tcp"]
        return int(bindings[0]["HostPort"])

    def _check_processes(self) -> None:
        for process in (self.agent, self.dns):
            if process is not None and not process.alive():
                raise DemoError(f"{process.name} exited with {process.popen.returncode}:\n"
                                f"{process.log_tail()}")

    def expected_instances(self) -> dict[str, int]:
        return {taskdef_environment(s)[f"SERVICE_{taskdef_port(s)}_NAME"]: n
                for s, n in (("calc", self.options.calc_instances),
                             ("time", self.options.time_instances))}

    def _wait_for_discovery(self) -> None:
        from ecssd_agent.dns.client import DiscoveryError, ServiceResolver

        resolver = ServiceResolver(self.options.domain, f"127.0.0.1:{self.dns_port}")

        def all_found() -> bool:
            self._check_processes()
            for name, count in self.expected_instances().items():
                try:
                    found = resolver.resolve(name)
                except DiscoveryError:
                    return False
                if len(found) != count:
                    return False
            return True

        wait_for(all_found, START_TIMEOUT, "every calc and time instance to be found in DNS")
        def portal_answers() -> bool:
            self._check_processes()
            return http_get(self.portal_port, "/health")[0] == 200

        wait_for(portal_answers, START_TIMEOUT, "the portal to answer", ignore=(OSError,))

    def _sweep(self) -> None:
        assert self.world is not None
        from health_lambda import handler

        sweep_env = {"ECS_CLUSTERS": self.world.cluster, "HOSTED_ZONE_ID": self.world.zone_id,
                     "DOMAIN": self.world.domain, "CHECK_TIMEOUT": "2"}
        saved = {k: os.environ.get(k) for k in sweep_env}
        os.environ.update(sweep_env)
        try:
            handler.runtime.reset()
            self.sweep_summary = handler.lambda_handler({}, None)
        finally:
            handler.runtime.reset()  # its cached clients point at this demo's moto server
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # --- the checks and the report -------------------------------------------------------

    def zone_records(self) -> list[Any]:
        from ecssd_agent.aws.route53 import Route53Zone, find_zone

        assert self.world is not None
        import boto3

        route53 = boto3.client("route53", endpoint_url=self.moto_url)
        zone = find_zone(route53, self.world.domain, self.world.zone_id, None)
        return list(Route53Zone(route53, zone).records())

    def dig(self, name: str) -> str:
        """``dig`` against the local DNS server (dnspython's rendering if dig is missing)."""
        qname = f"{name}.{self.options.domain}"
        dig = shutil.which("dig")
        if dig:
            proc = subprocess.run([dig, "@127.0.0.1", "-p", str(self.dns_port), "SRV", qname],
                                  capture_output=True, text=True, timeout=20, check=False)
            return proc.stdout.strip()
        import dns.message
        import dns.query

        query = dns.message.make_query(qname, "SRV")
        return str(dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=5).to_text())

    def check(self) -> Result:
        """Ask the portal for a calc and a time; compare with what the services must say."""
        result = Result()
        status, body = http_get(self.portal_port, "/calc/" + quote("(2+2)*3", safe=""))
        result.lines.append(f"GET /calc/(2+2)*3 -> {status} {json.dumps(body)}")
        if status != 200 or not isinstance(body, dict) or body.get("value") != 12:
            result.failures.append(f"calc through the portal: {status} {body}")
        layout = "Mon Jan 2 15:04:05 MST 2006"
        status, body = http_get(self.portal_port, "/time/" + quote(layout, safe=""))
        result.lines.append(f"GET /time/{layout} -> {status} {json.dumps(body)}")
        if status != 200 or not isinstance(body, dict) or not str(body.get("value", "")):
            result.failures.append(f"time through the portal: {status} {body}")
        elif self.world and body.get("instance_id") != self.world.instance_id:
            result.failures.append(f"time answered for instance {body.get('instance_id')}")
        errors = self.sweep_summary.get("errors")
        if errors:
            result.failures.append(f"the health sweep reported errors: {errors}")
        return result

    def report(self, result: Result) -> None:
        assert self.world is not None
        records = self.zone_records()
        self.say()
        self.say(f"== Route 53 zone {self.world.domain} ({self.world.zone_id}) in moto "
                 f"at {self.moto_url}: {len(records)} record sets (NS and SOA not shown)")
        for record in records:
            if record.type in ("SOA", "NS"):
                continue  # moto's own, and its SOA value is malformed
            ident = f"  [{record.set_identifier}]" if record.set_identifier else ""
            self.say(f"  {record.name:<45} {record.type:<4} {' | '.join(record.values)}{ident}")
        self.say()
        self.say(f"== dig @127.0.0.1 -p {self.dns_port} SRV _calc._tcp.{self.world.domain}")
        self.say(self.dig("_calc._tcp"))
        self.say()
        self.say("== health sweep (health_lambda.handler against moto)")
        self.say("  " + json.dumps({k: v for k, v in self.sweep_summary.items()
                                    if v not in ({}, [], None, "")}, sort_keys=True,
                                   default=str))
        self.say()
        self.say("== requests through the portal")
        for line in result.lines:
            self.say(f"  {line}")
        for failure in result.failures:
            self.say(f"  FAILED: {failure}")
        self.say()
        calc_port = self.published_port("calc-1")
        self.say(f"Portal:      http://127.0.0.1:{self.portal_port}/")
        self.say(f"A service:   curl -u admin:password 'http://127.0.0.1:{calc_port}"
                 "/calc/(2+2)*3'")
        self.say(f"Resolve:     dig @127.0.0.1 -p {self.dns_port} SRV "
                 f"_time._tcp.{self.world.domain}")
        self.say(f"Logs:        {self.workdir}")
        self.say("Started in   " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))

    # --- stop ----------------------------------------------------------------------------

    def _remove_containers(self) -> None:
        if self.docker is None:
            return
        for name, cid in list(self.containers.items()):
            with contextlib.suppress(docker.errors.NotFound):
                self.docker.containers.get(cid).remove(force=True, v=True)
            self.containers.pop(name, None)

    def close(self) -> None:
        """Remove the containers, let the agent delete the records, stop everything."""
        owned_before = self._owned_records()
        self._remove_containers()
        if self.agent is not None:
            code = self.agent.stop()
            if code not in (0, None):
                log.warning("the agent exited with %s:\n%s", code, self.agent.log_tail())
            self._remove_records()
        owned_after = self._owned_records()
        if owned_before is not None and owned_after is not None:
            self.say(f"Removed the containers and {owned_before - owned_after} of "
                     f"{owned_before} records ({owned_after} left).")
        self.stack.close()
        os.environ.clear()  # undo the AWS settings made for the moto server
        os.environ.update(self.original_env)
        if not self.options.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _owned_records(self) -> int | None:
        if self.world is None or not self.moto_url:
            return None
        from botocore.exceptions import BotoCoreError, ClientError

        from ecssd_agent.core import naming

        try:
            records = self.zone_records()
        except (BotoCoreError, ClientError, OSError) as exc:
            log.warning("cannot list the zone: %s", exc)
            return None
        label = naming.host_label(self.world.host_name)
        owned = 0
        for record in records:
            owner = ownership.parse_set_identifier(record.set_identifier or "")
            if owner is not None and owner.host == label:
                owned += 1
        return owned


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python3 -m examples.demo",
        description="Run ecssd locally: moto as Route 53/ECS, a Docker engine, the agent, "
                    "the DNS server, and the time/calc/portal examples.")
    parser.add_argument("--exit-after-check", action="store_true",
                        default=os.environ.get("ECSSD_DEMO_EXIT_AFTER_CHECK", "") in ("1", "true"),
                        help="stop after the checks; exit 0 only if they passed "
                             "(env ECSSD_DEMO_EXIT_AFTER_CHECK=1)")
    parser.add_argument("--offline", action="store_true",
                        default=os.environ.get("ECSSD_DEMO_OFFLINE", "") in ("1", "true"),
                        help="never try a registry: build the base image from Debian packages "
                             "(env ECSSD_DEMO_OFFLINE=1)")
    parser.add_argument("--base-image", help="base image for the examples (default "
                                             "python:3.12-slim, else an offline one)")
    parser.add_argument("--docker-host", help="Docker engine URL (default: DOCKER_HOST, "
                                              "ECSSD_DOCKER_HOST, the local socket, else a "
                                              "private dockerd)")
    parser.add_argument("--domain", default=DEFAULT_DOMAIN, help="the private zone's name")
    parser.add_argument("--portal-port", type=int, default=8080,
                        help="the portal's port on 127.0.0.1 (another free one if taken)")
    parser.add_argument("--dns-port", type=int, default=0, help="the DNS server's port "
                                                                "(default: a free one)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the agent's and the DNS server's logs afterwards")
    args = parser.parse_args(argv)
    return Options(exit_after_check=args.exit_after_check, offline=args.offline,
                   base_image=args.base_image, docker_host=args.docker_host,
                   domain=args.domain, portal_port=args.portal_port, dns_port=args.dns_port,
                   keep_logs=args.keep_logs)


class _Stop(BaseException):
    """SIGTERM during start-up: unwind like Ctrl-C does, so everything is removed."""


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("botocore", "boto3", "urllib3", "docker", "werkzeug", "health_lambda",
                  "ecssd_agent"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not started.is_set():
            raise _Stop()
        stop.set()

    started = threading.Event()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    demo = Demo(options)
    status = 1
    try:
        demo.start()
        result = demo.check()
        demo.report(result)
        status = 0 if result.ok else 1
        started.set()
        if not options.exit_after_check:
            demo.say("Running. Press Ctrl-C to stop and remove everything.")
            while not stop.wait(1.0):
                demo._check_processes()
    except (_Stop, KeyboardInterrupt):
        log.info("interrupted")
        status = 130
    except (DemoError, base.BaseImageError, images.ImageBuildError, docker.errors.DockerException,
            OSError) as exc:
        log.error("demo failed: %s", exc)
        options.keep_logs = True
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("stopping: removing containers and records")
        demo.close()
    return status
