"""The test infrastructure itself works: a private engine, offline images, published
ports on loopback, engine restart in place, and moto over HTTP.

If these fail, every integration test built on them is meaningless, so they are small,
direct and run first (alphabetical order does not matter: fixtures are shared).
"""

from __future__ import annotations

import ipaddress
import json
import os
import time

import boto3
import pytest
import requests

from tests.support.dockerd import DockerCLIError, DockerEngine
from tests.support.env import is_ci
from tests.support.images import (
    BUSYBOX_IMAGE,
    Containers,
    container_ip,
    host_port,
    python_image,
    run_container,
)
from tests.support.moto_server import MotoServer
from tests.support.poll import wait_for


def _health(port: int) -> requests.Response | None:
    response = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    return response if response.status_code == 200 else None


def _wait_health(port: int) -> requests.Response:
    return wait_for(
        lambda: _health(port),
        timeout=20,
        what=f"GET 127.0.0.1:{port}/health",
        ignore=(requests.ConnectionError, requests.Timeout),
    )


def test_engine_answers_info(docker_engine: DockerEngine) -> None:
    assert docker_engine.base_url.startswith("unix://") or os.environ.get("ECSSD_TEST_DOCKER_HOST")
    info = docker_engine.client().info()
    assert info["ServerVersion"]
    assert docker_engine.cli("info", "--format", "{{.ServerVersion}}").stdout.strip()


def test_busybox_serves_health_on_published_loopback_port(containers: Containers) -> None:
    cid = containers.run(ports=["127.0.0.1::8081", "127.0.0.1::53/udp"])
    port = host_port(containers.engine, cid, "8081/tcp")
    assert host_port(containers.engine, cid, "53/udp") > 0
    assert _wait_health(port).text.strip() == "ok"
    bridge = containers.engine.bridge_network
    if bridge is not None:  # private engine: containers live on the session's own bridge
        assert ipaddress.ip_address(container_ip(containers.engine, cid)) in (ipaddress.ip_network(bridge))


def test_run_container_passes_env_labels_and_name(containers: Containers) -> None:
    cid = containers.run(
        env={"SERVICE_8081_NAME": "calc"},
        labels={"com.example.role": "web"},
        name="ecssd-infra-env-test",
        cmd=["sleep", "60"],
    )
    attrs = containers.engine.client().containers.get(cid).attrs
    assert "SERVICE_8081_NAME=calc" in attrs["Config"]["Env"]
    assert attrs["Config"]["Labels"]["com.example.role"] == "web"
    assert attrs["Name"] == "/ecssd-infra-env-test"


def test_missing_image_fails_fast_without_pulling(docker_engine: DockerEngine) -> None:
    started = time.monotonic()
    with pytest.raises(DockerCLIError, match=r"(?i)no such image|not found|unable to find"):
        run_container(docker_engine, image="ecssd-does-not-exist:latest")
    assert time.monotonic() - started < 10  # --pull never: no slow failed registry lookup


def test_engine_stops_and_starts_again(docker_engine: DockerEngine, containers: Containers) -> None:
    if not docker_engine.restartable:
        pytest.skip("external engine (ECSSD_TEST_DOCKER_HOST) cannot be restarted")
    cid = containers.run(ports=["127.0.0.1::8081"])
    _wait_health(host_port(docker_engine, cid, "8081/tcp"))

    docker_engine.stop()
    assert not docker_engine.answers()
    docker_engine.start()

    assert docker_engine.answers()
    assert docker_engine.client().ping()
    state = docker_engine.client().containers.get(cid).attrs["State"]
    assert not state["Running"]  # containers stop with the engine; that is expected
    docker_engine.cli("start", cid)
    assert _wait_health(host_port(docker_engine, cid, "8081/tcp")).text.strip() == "ok"
    assert docker_engine.cli("image", "inspect", BUSYBOX_IMAGE).returncode == 0


def test_moto_route53_over_http(aws: MotoServer) -> None:
    route53 = aws.client("route53")
    route53.create_hosted_zone(
        Name="servicediscovery.internal",
        CallerReference="infra-test",
        HostedZoneConfig={"Comment": "infra", "PrivateZone": False},
    )
    names = [z["Name"] for z in route53.list_hosted_zones()["HostedZones"]]
    assert names == ["servicediscovery.internal."]
    # The raw endpoint is loopback HTTP, and in-process default clients use it too.
    assert aws.url.startswith("http://127.0.0.1:")
    assert os.environ["AWS_ENDPOINT_URL"] == aws.url
    assert len(boto3.client("route53").list_hosted_zones()["HostedZones"]) == 1


def test_moto_reset_between_tests(aws: MotoServer) -> None:
    assert aws.client("route53").list_hosted_zones()["HostedZones"] == []


def test_session_env_is_fake_and_local() -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert os.environ["AWS_DEFAULT_REGION"] == os.environ["AWS_REGION"] == "us-east-1"
    assert "169.254" not in os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
    assert "DOCKER_HOST" not in os.environ


def test_manual_ecs_transitions_keep_tasks_running(aws: MotoServer) -> None:
    aws.manual_ecs_transitions()
    ecs = aws.client("ecs")
    ecs.create_cluster(clusterName="infra")
    ec2 = aws.client("ec2")
    image_id = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]

    ecs.register_container_instance(
        cluster="infra",
        instanceIdentityDocument=json.dumps({"instanceId": instance["InstanceId"]}),
    )
    ecs.register_task_definition(
        family="web",
        containerDefinitions=[{"name": "web", "image": "busybox", "memory": 64}],
    )
    task_arn = ecs.run_task(cluster="infra", taskDefinition="web")["tasks"][0]["taskArn"]
    for _ in range(3):  # moto would otherwise advance the task on each read
        task = ecs.describe_tasks(cluster="infra", tasks=[task_arn])["tasks"][0]
        assert task["lastStatus"] == "RUNNING"


def test_reset_restores_default_transitions(aws: MotoServer) -> None:
    """moto's own reset keeps state-manager transitions; ours must not leak them."""
    aws.manual_ecs_transitions()
    aws.reset()
    got = requests.get(
        f"{aws.url}/moto-api/state-manager/get-transition",
        params={"model_name": "ecs::task"},
        timeout=10,
    ).json()
    assert got.get("progression") != "manual"


@pytest.mark.python_image
@pytest.mark.skipif(
    not (is_ci() or os.environ.get("ECSSD_TEST_PYTHON_IMAGE") == "1"),
    reason="slow once (debootstrap ~35 s); runs with make test, on CI or with ECSSD_TEST_PYTHON_IMAGE=1",
)
def test_python_image_runs_python(docker_engine: DockerEngine) -> None:
    name = python_image(docker_engine)
    out = docker_engine.cli("run", "--rm", "--pull", "never", name, "python3", "-c", "print(6 * 7)").stdout
    assert out.strip() == "42"
