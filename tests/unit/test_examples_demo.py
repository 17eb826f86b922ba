"""The examples' packaging and the demo's pieces that need no engine: task definitions,
Dockerfiles, build contexts, the slim offline rootfs, options."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import tarfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from examples import images
from examples.calc.app import PORT as CALC_PORT
from examples.demo import base
from examples.demo.engine import DEFAULT_SOCKET, candidates
from examples.demo.run import free_port, parse_args, taskdef_environment, taskdef_port
from examples.portal.app import DEFAULT_CALC_SERVICE, DEFAULT_TIME_SERVICE
from examples.portal.app import PORT as PORTAL_PORT
from examples.time.app import PORT as TIME_PORT
from tests.support.env import skip_or_fail

EXAMPLES = Path(images.__file__).resolve().parent
PORTS = {"time": TIME_PORT, "calc": CALC_PORT, "portal": PORTAL_PORT}


@pytest.mark.parametrize("service", images.SERVICES)
def test_taskdef_matches_the_service(service: str) -> None:
    definition = json.loads((EXAMPLES / service / "taskdef.json").read_text())
    container = definition["containerDefinitions"][0]
    mapping = container["portMappings"][0]
    assert mapping == {"containerPort": PORTS[service], "hostPort": 0, "protocol": "tcp"}
    env = taskdef_environment(service)
    names = {k: v for k, v in env.items() if re.fullmatch(r"SERVICE_\d+_NAME", k)}
    if service == "portal":
        assert names == {}  # not a microservice: nothing registers it (as in the reference)
        assert env["TIME_SERVICE"] == DEFAULT_TIME_SERVICE
        assert env["CALC_SERVICE"] == DEFAULT_CALC_SERVICE
    else:
        # What the portal looks up is what the agent publishes.
        wanted = {"time": DEFAULT_TIME_SERVICE, "calc": DEFAULT_CALC_SERVICE}[service]
        assert names == {f"SERVICE_{PORTS[service]}_NAME": wanted}
    assert env["AUTH_USER"] and env["AUTH_PASSWORD"]
    dockerfile = (EXAMPLES / service / "Dockerfile").read_text()
    assert f"ENV PORT={PORTS[service]}\n" in dockerfile
    assert f'CMD ["python3", "-m", "examples.{service}"]' in dockerfile
    assert "\nUSER 10001:10001\n" in dockerfile and "\nHEALTHCHECK " in dockerfile
    assert dockerfile.index("ARG BASE_IMAGE=python:3.12-slim") < dockerfile.index("FROM ${BASE_IMAGE}")
    assert taskdef_port(service) == PORTS[service]


def test_dockerfiles_share_their_first_layers() -> None:
    heads = {(EXAMPLES / s / "Dockerfile").read_text().split("\nENV PORT=")[0].split("\n# BASE")[1]
             for s in images.SERVICES}
    assert len(heads) == 1


@mock_aws
def test_taskdefs_register_in_ecs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    ecs = boto3.client("ecs", region_name="us-east-1")
    for service in images.SERVICES:
        definition = json.loads((EXAMPLES / service / "taskdef.json").read_text())
        registered = ecs.register_task_definition(**definition)["taskDefinition"]
        assert registered["family"] == f"ecssd-example-{service}"


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)} {stat.st_mode:o} {stat.st_mtime}".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_build_contexts_are_complete_and_identical(tmp_path: Path) -> None:
    calc = images.stage_context("calc", tmp_path / "calc")
    portal = images.stage_context("portal", tmp_path / "portal")
    app = calc / "app"
    for module in ("examples/calc/app.py", "examples/time/golayout.py", "examples/portal/index.html",
                   "examples/common/web.py", "vendor/ecssd_agent/dns/client.py",
                   "vendor/dns/resolver.py"):
        assert (app / module).is_file(), module
    assert not list(app.rglob("__pycache__")) and not (app / "examples" / "demo").exists()
    assert (calc / "Dockerfile").read_text() == (EXAMPLES / "calc" / "Dockerfile").read_text()
    assert all(p.stat().st_mode & 0o004 for p in app.rglob("*"))  # readable by uid 10001
    assert tree_digest(app) == tree_digest(portal / "app")  # the build cache can share it
    with pytest.raises(ValueError):
        images.stage_context("nope", tmp_path / "nope")


# --- the slim offline rootfs -----------------------------------------------------------


def host_file(*candidates: str) -> Path:
    for candidate in candidates:
        if Path(candidate).exists():
            return Path(candidate).resolve()
    skip_or_fail(f"none of {candidates} on this machine")


def test_needed_libraries_reads_dt_needed() -> None:
    needed = base.needed_libraries(host_file("/bin/true", "/usr/bin/true").read_bytes())
    assert "libc.so.6" in needed
    assert base.needed_libraries(b"#!/bin/sh\n") == []


def test_slim_rootfs_keeps_python_and_its_libraries(tmp_path: Path) -> None:
    libc = host_file("/lib/x86_64-linux-gnu/libc.so.6")
    loader = host_file("/lib64/ld-linux-x86-64.so.2")
    true = host_file("/bin/true", "/usr/bin/true")
    root = tmp_path / "root"
    files = {
        "usr/bin/python3.11": true.read_bytes(),           # an ELF that needs libc.so.6
        "usr/lib/x86_64-linux-gnu/libc.so.6": libc.read_bytes(),
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": loader.read_bytes(),
        "usr/lib/x86_64-linux-gnu/libunused.so.1": b"not needed",
        "usr/lib/python3.11/os.py": b"# stdlib\n",
        "usr/lib/python3.11/idlelib/x.py": b"# GUI: dropped\n",
        "usr/share/doc/python3/README": b"dropped\n",
        "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
        "etc/python3.11/sitecustomize.py": b"# kept\n",
        "etc/shadow": b"dropped\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "usr/lib64").mkdir()
    links = {"lib": "usr/lib", "lib64": "usr/lib64", "bin": "usr/bin",
             "usr/lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
             "usr/bin/python3": "python3.11",
             "usr/lib/python3.11/sitecustomize.py": "/etc/python3.11/sitecustomize.py"}
    for name, target in links.items():
        (root / name).symlink_to(target)
    source = tmp_path / "full.tar"
    with tarfile.open(source, "w") as tar:
        tar.add(root, arcname=".")
    slim = base.slim_rootfs(source, tmp_path / "slim.tar")
    with tarfile.open(slim) as tar:
        names = {m.name: m for m in tar.getmembers()}
    for kept in ("usr/bin/python3.11", "usr/bin/python3", "usr/lib/x86_64-linux-gnu/libc.so.6",
                 "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "usr/lib64/ld-linux-x86-64.so.2",
                 "lib", "lib64", "bin", "usr/lib/python3.11/os.py", "etc/passwd",
                 "usr/lib/python3.11/sitecustomize.py", "etc/python3.11/sitecustomize.py"):
        assert kept in names, kept
    for dropped in ("usr/lib/x86_64-linux-gnu/libunused.so.1", "usr/lib/python3.11/idlelib/x.py",
                    "usr/share/doc/python3/README", "etc/shadow"):
        assert dropped not in names, dropped
    assert names["tmp"].mode == 0o1777 and names["usr/lib64"].isdir()


# --- options ---------------------------------------------------------------------------


def test_engine_candidates_order() -> None:
    assert candidates("unix:///a.sock", {"DOCKER_HOST": "tcp://b:2375",
                                         "ECSSD_DOCKER_HOST": "unix:///c.sock"}) == [
        "unix:///a.sock", "tcp://b:2375", "unix:///c.sock", DEFAULT_SOCKET]
    assert candidates(None, {}) == [DEFAULT_SOCKET]


def test_parse_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECSSD_DEMO_EXIT_AFTER_CHECK", raising=False)
    monkeypatch.delenv("ECSSD_DEMO_OFFLINE", raising=False)
    options = parse_args([])
    assert not options.exit_after_check and not options.offline and options.portal_port == 8080
    options = parse_args(["--exit-after-check", "--offline", "--base-image", "x:1",
                          "--portal-port", "0"])
    assert options.exit_after_check and options.offline and options.base_image == "x:1"
    monkeypatch.setenv("ECSSD_DEMO_EXIT_AFTER_CHECK", "1")
    monkeypatch.setenv("ECSSD_DEMO_OFFLINE", "true")
    options = parse_args([])
    assert options.exit_after_check and options.offline


def test_free_port_is_free_for_tcp_and_udp() -> None:
    port = free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", port))
