"""The Lambda zip from ``make package``: reproducible, complete, Docker-free, and it runs.

The decisive test imports the zip in a clean virtual environment holding nothing but boto3
(what the Python Lambda runtime provides), the way Lambda does (the unpacked zip first on
``sys.path``), and calls every handler against a moto server: a missing core module, an
undeclared dependency or an import of the Docker SDK fails here, not in AWS.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.aws.change_queue import Hint, hint_body
from ecssd_agent.aws.host_store import HostStore
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.host_state import Published
from ecssd_agent.core.metadata import ECS_CLUSTER, ECS_CONTAINER_NAME, ECS_TASK_ARN
from ecssd_agent.core.model import Container, Host, Routing
from ecssd_agent.core.records import host_records
from tests.support.env import FAKE_AWS_ENV, REGION
from tests.support.moto_server import MotoServer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import package_lambda  # noqa: E402

HANDLERS = ("health_lambda.handler.lambda_handler", "health_lambda.task_events.lambda_handler",
            "health_lambda.zone_writer_handler.lambda_handler")
CLUSTER = "pkg-cluster"
ZONE = "servicediscovery.internal"
XRAY_GROUP = "service:xray-daemon"


# --- building ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made_zip() -> Path:
    """``make package``, exactly as documented (writes dist/ecssd-lambda.zip)."""
    proc = subprocess.run(["make", "--no-print-directory", "package", f"PYTHON={sys.executable}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sha256" in proc.stdout
    return package_lambda.DEFAULT_OUTPUT


def test_build_is_reproducible(made_zip: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    package_lambda.build(again)
    assert again.read_bytes() == made_zip.read_bytes()
    with zipfile.ZipFile(made_zip) as archive:
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
            assert (info.external_attr >> 16) == 0o100644, info.filename
        assert archive.namelist() == sorted(archive.namelist())


def test_zip_holds_the_handlers_and_the_core_they_import_and_no_docker(made_zip: Path) -> None:
    with zipfile.ZipFile(made_zip) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read(package_lambda.MANIFEST_NAME))
    assert sorted(manifest["handlers"]) == sorted(HANDLERS)
    for handler in HANDLERS:
        assert handler.rpartition(".")[0].replace(".", "/") + ".py" in names
    # Every module of health_lambda, and the core modules they reach, and nothing else.
    lambda_modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "health_lambda").rglob(
        "*.py") if "__pycache__" not in p.parts}
    assert lambda_modules <= names
    assert {"ecssd_agent/__init__.py", "ecssd_agent/aws/route53.py", "ecssd_agent/core/naming.py",
            "ecssd_agent/core/plan.py"} <= names
    assert not any(n.endswith(("docker_source.py", "docker_events.py")) for n in names)
    assert not {"ecssd_agent/agent/cli.py", "ecssd_agent/agent/daemon.py"} & names  # the per-host agent
    assert not any(n.startswith(("tests/", "examples/", "docker/")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # Vendored distributions (none today) never include what the runtime already has.
    assert not set(manifest["vendored"]) & set(manifest["runtime_provided"])
    assert "boto3" in manifest["runtime_provided"]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_lambda_module_reaching_docker_is_refused_with_the_chain(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "health_lambda/__init__.py": "",
        "health_lambda/handler.py": "from ecssd_agent import helper\n",
        "ecssd_agent/__init__.py": "",
        "ecssd_agent/helper.py": "from . import engine\n",
        "ecssd_agent/engine.py": "import docker\n",
    })
    graph = package_lambda.import_graph(root)
    assert graph.third_party == {"docker": "ecssd_agent.engine"}
    assert graph.chain("ecssd_agent.engine") == [
        "health_lambda.handler", "ecssd_agent.helper", "ecssd_agent.engine"]
    with pytest.raises(package_lambda.PackagingError, match=re.escape(
                       "ecssd_agent.helper -> ecssd_agent.engine imports docker")):
        package_lambda.make_plan(root)


def test_third_party_imports_are_vendored_except_what_the_runtime_has(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "health_lambda/__init__.py": "import json\n",
        "health_lambda/handler.py": "import requests\nimport boto3\nfrom ecssd_agent import x\n",
        "ecssd_agent/__init__.py": "",
        "ecssd_agent/x.py": "import botocore.config\n",
    })
    plan = package_lambda.make_plan(root)
    assert set(plan.modules) == {"health_lambda", "health_lambda.handler", "ecssd_agent",
                                 "ecssd_agent.x"}
    # requests and its own dependencies, pinned to what is installed here; urllib3 comes
    # with boto3 in the runtime.
    expected = package_lambda.closure(["requests"]) - package_lambda.closure(["boto3"])
    assert set(plan.vendored) == expected and "requests" in expected
    assert "urllib3" not in plan.vendored
    assert plan.vendored["requests"] == importlib.metadata.version("requests")


# --- a clean virtual environment -----------------------------------------------------------


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with boto3 (and its dependencies) only: the Lambda Python runtime's libraries."""
    venv = tmp_path_factory.mktemp("lambda-runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    pin = f"boto3=={importlib.metadata.version('boto3')}"  # likely in pip's cache already
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", pin], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, timeout=120, check=True).stdout
    installed = {package_lambda.canonical(p["name"]) for p in json.loads(listed)}
    assert installed - {"pip", "setuptools"} == package_lambda.closure(["boto3"])
    return python


@pytest.fixture(scope="module")
def task_dir(made_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip unpacked, as Lambda unpacks it into /var/task."""
    target = tmp_path_factory.mktemp("var-task")
    with zipfile.ZipFile(made_zip) as archive:
        archive.extractall(target)
    return target


RUNNER = textwrap.dedent('''
    import importlib, json, sys
    task_dir, handler, event_file = sys.argv[1:4]
    sys.path.insert(0, task_dir)  # Lambda puts /var/task first

    class Context:
        function_name = "ecssd-test"
        aws_request_id = "test-request"

        def get_remaining_time_in_millis(self):
            return 60000

    module_name, _, function = handler.rpartition(".")
    module = importlib.import_module(module_name)
    with open(event_file) as handle:
        event = json.load(handle)
    result = getattr(module, function)(event, Context())
    stdlib = set(sys.stdlib_module_names)
    loaded = {name: getattr(mod, "__file__", None) or "" for name, mod in sys.modules.items()
              if name.split(".")[0] not in stdlib and not name.startswith("_")}
    try:
        import docker  # noqa: F401
        has_docker = True
    except ImportError:
        has_docker = False
    print(json.dumps({"result": result, "loaded": loaded, "has_docker": has_docker},
                     default=str))
''')


@dataclass
class Invocation:
    result: Any
    loaded: dict[str, str]
    stderr: str


def invoke(python: Path, task_dir: Path, handler: str, event: Any, env: dict[str, str],
           tmp_path: Path) -> Invocation:
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    event_file = tmp_path / f"event-{handler.split('.')[1]}.json"
    event_file.write_text(json.dumps(event))
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                 **FAKE_AWS_ENV, "AWS_LAMBDA_FUNCTION_NAME": "ecssd-test", **env}
    proc = subprocess.run([str(python), "-I", str(runner), str(task_dir), handler,
                           str(event_file)], env=clean_env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"{handler} crashed:\n{proc.stderr[-4000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["has_docker"] is False, "the clean runtime must not have the Docker SDK"
    runtime = package_lambda.closure(["boto3"])
    providers = importlib.metadata.packages_distributions()
    for name, path in out["loaded"].items():
        top = name.split(".")[0]
        if top in package_lambda.PROJECT_PACKAGES:
            assert path.startswith(str(task_dir)), f"{name} was loaded from {path}, not the zip"
        else:
            assert "site-packages" in path or not path, (name, path)
            dists = {package_lambda.canonical(d) for d in providers.get(top, [top])}
            assert dists & runtime, f"{name} is neither in the zip nor in the runtime"
    return Invocation(out["result"], out["loaded"], proc.stderr)


@dataclass
class World:
    aws: MotoServer
    zone_id: str
    zone: Route53Zone
    host_ip: str
    xray_task: str

    def names(self) -> set[tuple[str, str]]:
        return {(r.name, r.type) for r in self.zone.records()}


@pytest.fixture
def world(aws: MotoServer) -> Iterator[World]:
    """A cluster with one live host running the X-Ray daemon, and records of a dead host."""
    aws.manual_ecs_transitions()
    ec2, ecs, route53 = aws.client("ec2"), aws.client("ecs"), aws.client("route53")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/20")["Subnet"]["SubnetId"]
    created = route53.create_hosted_zone(
        Name=ZONE, CallerReference=f"pkg-{vpc}", HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": REGION, "VPCId": vpc})
    zone_id = created["HostedZone"]["Id"].rsplit("/", 1)[-1]
    zone = Route53Zone(route53, find_zone(route53, ZONE, zone_id))
    ecs.create_cluster(clusterName=CLUSTER)
    host_ip = "127.0.0.7"
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                 SubnetId=subnet, PrivateIpAddress=host_ip)["Instances"][0]
    ci = ecs.register_container_instance(cluster=CLUSTER, instanceIdentityDocument=json.dumps(
        {"instanceId": instance["InstanceId"]}))["containerInstance"]["containerInstanceArn"]
    ecs.register_task_definition(family="xray-daemon", networkMode="bridge",
                                 containerDefinitions=[{
                                     "name": "xray-daemon", "image": "xray", "memory": 64,
                                     "portMappings": [{"containerPort": 2000, "hostPort": 2000,
                                                       "protocol": "udp"}]}])
    xray = ecs.start_task(cluster=CLUSTER, taskDefinition="xray-daemon",
                          containerInstances=[ci], group=XRAY_GROUP)["tasks"][0]["taskArn"]
    # A host that is no container instance any more: its agent's records are orphans.
    gone = Container(id="ab" * 32, name="ecs-web", env={"SERVICE_8080_NAME": "web"},
                     labels={ECS_TASK_ARN: f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/"
                             + "e" * 32, ECS_CLUSTER: CLUSTER, ECS_CONTAINER_NAME: "web"},
                     ports={"8080/tcp": (40001,)})

    class Docker:
        def containers(self) -> list[Container]:
            return [gone]

    Agent(zone, Docker(), Host("ip-127-0-9-9", "127.0.9.9"),  # type: ignore[arg-type]
          Routing.WEIGHTED).sync()
    yield World(aws, zone_id, zone, host_ip, str(xray))


def _task_event(ecs: Any, task_arn: str) -> dict[str, Any]:
    detail = ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn])["tasks"][0]
    detail = json.loads(json.dumps(detail, default=str))
    for container in detail.get("containers", []):
        container["lastStatus"] = detail["lastStatus"]
        container.setdefault("networkBindings", [])
    return {"version": "0", "id": "5b9a3c1e-0000-4000-8000-000000000001",
            "detail-type": "ECS Task State Change", "source": "aws.ecs",
            "account": "123456789012", "time": "2024-01-01T00:00:00Z", "region": REGION,
            "resources": [task_arn], "detail": detail}


def test_both_handlers_run_from_the_zip_in_a_clean_runtime(
        clean_python: Path, task_dir: Path, world: World, tmp_path: Path) -> None:
    common = {"AWS_ENDPOINT_URL": world.aws.url, "HOSTED_ZONE_ID": world.zone_id,
              "ECS_CLUSTERS": CLUSTER}
    web = (f"web.{ZONE}.", "SRV")
    assert web in world.names()

    # The sweep, on a scheduled event: deletes the dead host's records.
    scheduled = {"version": "0", "id": "e7b6", "detail-type": "Scheduled Event",
                 "source": "aws.events", "account": "123456789012", "region": REGION,
                 "time": "2024-01-01T00:00:00Z", "resources": [], "detail": {}}
    sweep = invoke(clean_python, task_dir, HANDLERS[0], scheduled,
                   {**common, "MAX_DELETE_FRACTION": "1", "GRACE_SECONDS": "0"}, tmp_path)
    summary = sweep.result
    assert summary["errors"] == [] and summary["dry_run"] is False, summary
    assert web not in world.names(), summary
    assert '"deleted"' in sweep.stderr  # the one JSON summary line, as Lambda logs it

    # The task-events function, on the X-Ray daemon's RUNNING event: publishes xray.<zone>.
    fixed = {**common, "RR_NAME": f"xray.{ZONE}", "TASK_GROUP": XRAY_GROUP,
             "BRIDGE_RECORDS": "false"}
    event = _task_event(world.aws.client("ecs"), world.xray_task)
    result = invoke(clean_python, task_dir, HANDLERS[1], event, fixed, tmp_path).result
    assert isinstance(result, dict) and result.get("status"), result
    xray = [r for r in world.zone.records() if r.name == f"xray.{ZONE}."]
    assert [(r.type, r.values) for r in xray] == [("A", (world.host_ip,))], result

    # A malformed event is answered with a summary, not a crash.
    odd = invoke(clean_python, task_dir, HANDLERS[1], {"detail": "nonsense"}, fixed,
                 tmp_path).result
    assert isinstance(odd, dict) and odd.get("status"), odd


def test_zone_writer_runs_from_the_zip_in_a_clean_runtime(
        clean_python: Path, task_dir: Path, world: World, tmp_path: Path) -> None:
    """The queued mode's writer, on the event its SQS mapping gives it: applies a host's
    published state (a table with the quickstart's key schema) to the zone."""
    dynamodb = world.aws.client("dynamodb")
    dynamodb.create_table(
        TableName="ecssd-hosts", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "host", "AttributeType": "S"},
                              {"AttributeName": "kind", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "host", "KeyType": "HASH"},
                   {"AttributeName": "kind", "KeyType": "RANGE"}])
    host = Host("ip-127-0-8-8", "127.0.8.8")
    records, problems = host_records(host, [], world.zone.zone.name, Routing.WEIGHTED, 60)
    assert records and not problems
    HostStore(dynamodb, "ecssd-hosts").publish(
        Published(host.label, world.zone.zone.name, 1, tuple(records), True))
    hint = {"messageId": "m-1", "receiptHandle": "r-1", "eventSource": "aws:sqs",
            "body": hint_body(Hint(host.label, world.zone.zone.name, 1))}
    bad = {"messageId": "m-2", "receiptHandle": "r-2", "eventSource": "aws:sqs",
           "body": "not a hint"}
    env = {"AWS_ENDPOINT_URL": world.aws.url, "HOSTED_ZONE_ID": world.zone_id,
           "HOST_TABLE": "ecssd-hosts", "LOG_LEVEL": "info"}
    result = invoke(clean_python, task_dir, HANDLERS[2], {"Records": [hint, bad]}, env,
                    tmp_path).result
    # Nothing to deliver again: the hint was written, the bad message can never be.
    assert result == {"batchItemFailures": []}, result
    written = [r for r in world.zone.records() if r.name == f"{host.label}.{ZONE}."]
    assert [(r.type, r.values) for r in written] == [("A", (host.ip,))]
