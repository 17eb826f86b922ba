"""The CloudFormation quickstart: lint-clean, least privilege, consistent with the code, and
deployable (moto's CloudFormation behind a moto server).

What is checked, and against what:
- cfn-lint: no error, no warning; any ignored rule carries its reason in the template.
- IAM, read from the template: ``Resource: "*"`` only for actions the Service Authorization
  Reference gives no resource type (the table below, cross-checked against the reference's
  data that cfn-lint ships), or narrowed by a condition key; no FullAccess managed policy.
- IAM, observed: the stack is created in moto, its own Lambda functions' configuration is
  read back, both handlers (and the agent CLI) run against the stack's own cluster and zone
  through a recording proxy, and every AWS call they make must be allowed by their role in
  the template and aimed at this stack's zone and cluster. So "least privilege" is also
  "enough privilege".
- Consistency with the code: the example task definitions against the examples' code and
  taskdef.json snippets; Lambda and agent environment variables against the settings the
  code reads; the Lambda handlers against the package; image defaults against the
  Dockerfile.
- Deployability: the stack reaches CREATE_COMPLETE in moto; resource types moto cannot
  create are left out (with whatever references them) and listed, and that list must be
  exactly KNOWN_UNSUPPORTED so a change either way is noticed.
"""

from __future__ import annotations

import ast
import configparser
import http.client
import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.session
import pytest

from ecssd_agent.agent import settings as agent_settings
from ecssd_agent.agent.host_agent import Agent
from ecssd_agent.agent.sink import DirectSink
from ecssd_agent.aws.clients import Clients
from ecssd_agent.aws.route53 import Route53Zone, find_zone
from ecssd_agent.core.metadata import ECS_CLUSTER, ECS_CONTAINER_NAME, ECS_TASK_ARN
from ecssd_agent.core.model import Container, Host, Routing
from ecssd_agent.core.naming import task_id
from ecssd_agent.events.reconcile import Scope
from ecssd_agent.events.reconcile import scope_of as reconcile_scope
from ecssd_agent.events.settings import TaskEventSettings
from ecssd_agent.sweep.settings import SweepSettings
from ecssd_agent.writer.settings import WriterSettings
from health_lambda import handler as sweep_handler
from health_lambda import task_events
from tests.support.dockerd import DockerEngine
from tests.support.env import skip_or_fail
from tests.support.moto_server import MotoServer
from tests.support.poll import wait_for

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "cloudformation" / "quickstart.yaml"
sys.path.insert(0, str(ROOT / "scripts"))
import package_lambda  # noqa: E402

STACK = "ecssd-test"
REGION = "us-east-1"
PASSWORD = "not-a-real-password"

# --- the IAM tables ------------------------------------------------------------------------

#: Actions used with Resource "*" because they support no resource type: their "Resource
#: types" column is empty in the Service Authorization Reference
#: (https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html).
#: Exactly the ones the template uses. Not needed, because the stack passes ids and names:
#: ecs:ListClusters (the sweep with ECS_CLUSTERS empty) and route53:ListHostedZonesByName
#: (the agent or a Lambda given only DOMAIN); both would be "*" too.
UNSCOPABLE: dict[str, str] = {
    "ecs:DescribeTaskDefinition": "list_amazonelasticcontainerservice.html: no resource type",
    "ec2:DescribeInstances": "list_amazonec2.html: no resource type (account-wide describe)",
}
#: Actions the reference scopes to a resource the call does not name (ListTasks: a container
#: instance, but it is called per cluster): "*" narrowed by this condition key, as the ECS
#: developer guide's cluster examples do.
CONDITION_SCOPED: dict[str, str] = {"ecs:ListTasks": "ecs:cluster"}
#: AWS managed policies the template may attach, and why each is acceptable.
MANAGED_POLICIES: dict[str, str] = {
    "service-role/AmazonEC2ContainerServiceforEC2Role": "the ECS container agent's own policy",
    "service-role/AWSLambdaVPCAccessExecutionRole": "logs and ENIs for a function in a VPC",
    "AWSXRayDaemonWriteAccess": "xray:PutTraceSegments/PutTelemetryRecords; no resource types",
}
#: Resource types moto's CloudFormation (5.2.x) cannot create: the task-events Lambda's
#: on-failure destination, the alarms and the sweep's metric filters (checked on the template
#: instead: test_task_events_failures_go_to_an_alarmed_queue,
#: test_cloudformation_sweep_alarm.py). Everything else deploys.
KNOWN_UNSUPPORTED: frozenset[str] = frozenset({"AWS::Lambda::EventInvokeConfig",
                                               "AWS::CloudWatch::Alarm",
                                               "AWS::Logs::MetricFilter"})

# --- reading the template ------------------------------------------------------------------


def load_template(text: str | None = None) -> dict[str, Any]:
    """The template as plain dicts/lists (short-form tags become Ref / Fn::X)."""
    from cfnlint.decode import decode_str  # type: ignore[import-untyped]

    template, matches = decode_str(TEMPLATE.read_text() if text is None else text)
    assert not matches, matches
    return json.loads(json.dumps(template))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of(template: Mapping[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def refs(value: Any) -> set[str]:
    """Logical ids and parameters a value refers to (Ref, GetAtt, ${X} in Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text)}
                if isinstance(inner, list):
                    found |= refs(inner[1])
            else:
                found |= refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= refs(inner)
    return found


def condition_values(template: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, bool]:
    """Evaluate the template's conditions for these parameter values (the forms it uses:
    Fn::Equals of a parameter and a literal, Fn::Not, Condition)."""
    values = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    values.update(parameters)
    specs = template.get("Conditions", {})

    def evaluate(spec: Mapping[str, Any]) -> bool:
        ((function, args),) = spec.items()
        if function == "Fn::Equals":
            left, right = args
            return values[left["Ref"]] == right
        if function == "Fn::Not":
            return not evaluate(args[0])
        if function == "Condition":
            return evaluate(specs[args])
        raise AssertionError(f"condition form {function} is not evaluated by this test")

    return {name: evaluate(spec) for name, spec in specs.items()}


def active_resources(template: Mapping[str, Any],
                     conditions: Mapping[str, bool]) -> dict[str, dict[str, Any]]:
    """The resources CloudFormation creates for these condition values."""
    return {k: v for k, v in template["Resources"].items()
            if "Condition" not in v or conditions[v["Condition"]]}


def container_env(container: Mapping[str, Any],
                  conditions: Mapping[str, bool]) -> dict[str, Any]:
    """A container definition's Environment as {name: value}, Fn::If resolved (on items and
    on values). The agent reads a variable set to "" as unset."""
    out = {}
    for item in container["Environment"]:
        for entry in resolve_ifs(item, conditions):
            (out[entry["Name"]],) = resolve_ifs(entry["Value"], conditions)
    return out


def resolve_ifs(value: Any, conditions: Mapping[str, bool] | None) -> list[Any]:
    """Every value Fn::If may produce (conditions None: both branches; else the chosen one)."""
    if isinstance(value, dict) and "Fn::If" in value:
        name, yes, no = value["Fn::If"]
        branches = [yes, no] if conditions is None else [yes if conditions[name] else no]
        out: list[Any] = []
        for branch in branches:
            if branch != {"Ref": "AWS::NoValue"}:
                out.extend(resolve_ifs(branch, conditions))
        return out
    return [value]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Statement:
    role: str
    sid: str
    actions: tuple[str, ...]
    resources: tuple[Any, ...]
    condition: Mapping[str, Any]


def statements(template: Mapping[str, Any],
               conditions: Mapping[str, bool] | None = None) -> list[Statement]:
    """Every Allow statement of every inline policy of every role."""
    out = []
    for role_id, role in resources_of(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for raw in policy["PolicyDocument"]["Statement"]:
                for stmt in resolve_ifs(raw, conditions):
                    assert stmt["Effect"] == "Allow", f"{role_id}: only Allow statements expected"
                    out.append(Statement(role_id, stmt.get("Sid", "?"),
                                         tuple(as_list(stmt["Action"])),
                                         tuple(as_list(stmt["Resource"])),
                                         stmt.get("Condition", {})))
    return out


def role_actions(template: Mapping[str, Any], role: str,
                 conditions: Mapping[str, bool] | None = None) -> set[str]:
    return {a for s in statements(template, conditions) if s.role == role for a in s.actions}


def reference_data() -> dict[str, Any]:
    """The Service Authorization Reference's actions and resource types, as cfn-lint ships it."""
    import cfnlint  # type: ignore[import-untyped]

    path = Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"
    return dict(json.loads(path.read_text()))


def scopable(data: Mapping[str, Any], action: str) -> bool:
    """True when the reference lists at least one resource type for the action."""
    service, _, name = action.partition(":")
    actions = {k.lower(): v for k, v in data[service]["Actions"].items()}
    assert name.lower() in actions, f"{action} is not an action in the reference"
    return bool(actions[name.lower()].get("Resources"))


# --- lint ----------------------------------------------------------------------------------


def test_cfn_lint_reports_nothing() -> None:
    exe = Path(sys.executable).with_name("cfn-lint")
    cmd = [str(exe) if exe.exists() else shutil.which("cfn-lint") or "cfn-lint",
           "--format", "json", str(TEMPLATE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    matches = json.loads(proc.stdout or "[]")
    summary = [f"{m['Rule']['Id']} {m['Location']['Path']}: {m['Message']}" for m in matches]
    assert summary == [], "\n".join(summary)
    assert proc.returncode == 0, proc.stderr


def test_every_ignored_lint_rule_has_a_reason(template: dict[str, Any]) -> None:
    metadata = template.get("Metadata", {})
    ignored = set(metadata.get("cfn-lint", {}).get("config", {}).get("ignore_checks", []))
    reasons = metadata["ecssd"]["cfn-lint-ignores"]
    assert set(reasons) == ignored, "each ignored rule needs a reason, each reason a rule"
    assert all(isinstance(r, str) and len(r) > 20 for r in reasons.values())


# --- IAM -----------------------------------------------------------------------------------


def test_star_resources_only_for_unscopable_actions(template: dict[str, Any]) -> None:
    data = reference_data()
    for action, why in UNSCOPABLE.items():
        assert not scopable(data, action), f"{action} supports a resource type: {why} is stale"
    for action in CONDITION_SCOPED:
        assert scopable(data, action)
    problems = []
    on_star: set[str] = set()
    for stmt in statements(template):
        for action in stmt.actions:
            assert "*" not in action, f"{stmt.role}/{stmt.sid}: wildcard action {action}"
        if "*" not in stmt.resources:
            continue
        on_star.update(stmt.actions)
        keys = {key for test in stmt.condition.values() for key in test}
        for action in stmt.actions:
            if action in UNSCOPABLE:
                continue
            if CONDITION_SCOPED.get(action) in keys:
                continue
            problems.append(f"{stmt.role}/{stmt.sid}: {action} on '*' (scopable: "
                            f"{scopable(data, action)})")
    assert problems == []
    assert on_star - set(CONDITION_SCOPED) == set(UNSCOPABLE), "the table is out of date"


def test_scoped_statements_name_this_stacks_zone_and_cluster(template: dict[str, Any]) -> None:
    for stmt in statements(template):
        services = {a.split(":")[0] for a in stmt.actions if a not in UNSCOPABLE}
        named = {n for n in refs(list(stmt.resources)) | refs(stmt.condition)
                 if not n.startswith("AWS::")}
        if "route53" in services:
            assert named == {"HostedZone"}, f"{stmt.role}/{stmt.sid} is not this zone only"
        if "ecs" in services:
            assert "Cluster" in named, f"{stmt.role}/{stmt.sid} is not this cluster only"
        if "dynamodb" in services:
            assert named == {"HostTable"}, f"{stmt.role}/{stmt.sid} is not this table only"
        if "sqs" in services:
            queue = "TaskEventsFailureQueue" if stmt.role == "TaskEventsRole" else "ChangeQueue"
            assert named == {queue}, f"{stmt.role}/{stmt.sid} is not this queue only"


def test_stop_task_is_conditioned_on_the_cluster(template: dict[str, Any]) -> None:
    stops = [s for s in statements(template) if "ecs:StopTask" in s.actions]
    assert [s.role for s in stops] == ["SweepRole"]
    (stop,) = stops
    assert stop.condition == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}}


def test_managed_policies_are_known_and_none_is_full_access(template: dict[str, Any]) -> None:
    attached = set()
    for role_id, role in resources_of(template, "AWS::IAM::Role").items():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            text = arn["Fn::Sub"] if isinstance(arn, dict) else arn
            name = text.split(":policy/", 1)[1]
            assert "FullAccess" not in name, f"{role_id} attaches {name}"
            attached.add(name)
    assert attached <= set(MANAGED_POLICIES), attached - set(MANAGED_POLICIES)
    assert not resources_of(template, "AWS::IAM::ManagedPolicy")
    assert not resources_of(template, "AWS::IAM::User")


# --- the cluster ---------------------------------------------------------------------------


def test_instances_require_imdsv2_and_use_current_building_blocks(template: dict[str, Any]) -> None:
    (lt,) = resources_of(template, "AWS::EC2::LaunchTemplate").values()
    data = lt["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert data["ImageId"] == {"Ref": "EcsAmiId"}
    ami = template["Parameters"]["EcsAmiId"]
    assert ami["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert ami["Default"] == "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
    (asg,) = resources_of(template, "AWS::AutoScaling::AutoScalingGroup").values()
    assert asg["Properties"]["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": "LaunchTemplate"}
    types = {r["Type"] for r in template["Resources"].values()}
    assert "AWS::AutoScaling::LaunchConfiguration" not in types
    assert "AWS::ElasticLoadBalancing::LoadBalancer" not in types  # classic ELB
    assert template["Parameters"]["ZoneName"]["Default"] == "servicediscovery.internal"


def test_a_leaving_instance_lets_its_agent_see_it_before_shutdown(template: dict[str, Any]
                                                                   ) -> None:
    """Terminating:Wait sets the instance metadata's target lifecycle state to Terminated
    before the shutdown stops the agent (--deregister-on-exit reads it); the instances go
    before the agents on stack deletion, so the zone is emptied before it is deleted."""
    (asg,) = resources_of(template, "AWS::AutoScaling::AutoScalingGroup").values()
    (hook,) = asg["Properties"]["LifecycleHookSpecificationList"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["DefaultResult"] == "CONTINUE" and 30 <= hook["HeartbeatTimeout"] <= 120
    assert "AgentService" in as_list(asg["DependsOn"])


def test_agent_runs_as_a_daemon_with_the_docker_socket(template: dict[str, Any]) -> None:
    service = template["Resources"]["AgentService"]["Properties"]
    assert service["SchedulingStrategy"] == "DAEMON"
    taskdef = template["Resources"][service["TaskDefinition"]["Ref"]]["Properties"]
    assert taskdef["NetworkMode"] == "host"
    volumes = {v["Name"]: v["Host"]["SourcePath"] for v in taskdef["Volumes"]}
    (agent,) = taskdef["ContainerDefinitions"]
    mounts = {m["ContainerPath"]: volumes[m["SourceVolume"]] for m in agent["MountPoints"]}
    assert mounts == {"/var/run/docker.sock": "/var/run/docker.sock"}
    assert "--deregister-on-exit" in agent["Command"]
    health = " ".join(str(p) for p in agent["HealthCheck"]["Command"])
    assert "/healthz" in health and "AgentStatusPort" in refs(agent["HealthCheck"])
    known = {agent_settings.env_name(f.name) for f in fields(agent_settings.Settings)}
    for mode in ("queued", "direct"):
        env = container_env(agent, condition_values(template, {"AgentWriteMode": mode}))
        assert env["ECSSD_STATUS_PORT"] == {"Ref": "AgentStatusPort"}
        assert env["ECSSD_DOMAIN"] == {"Ref": "ZoneName"}
        assert {n for n in env if n.startswith("ECSSD_")} <= known, "a variable the agent ignores"
        if mode == "direct":
            assert env["ECSSD_HOSTED_ZONE_ID"] == {"Ref": "HostedZone"}
            assert env["ECSSD_HOST_TABLE"] == env["ECSSD_CHANGE_QUEUE"] == ""
        else:  # the zone by name only: a queued agent never asks Route 53
            assert env["ECSSD_HOST_TABLE"] == {"Ref": "HostTable"}
            assert env["ECSSD_CHANGE_QUEUE"] == {"Ref": "ChangeQueue"}
            assert env["ECSSD_HOSTED_ZONE_ID"] == ""


def _port(value: Any) -> Any:
    return value["Ref"] if isinstance(value, dict) else value


def _ingress(template: Mapping[str, Any], group: str) -> dict[tuple[str, Any, Any], set[str]]:
    """The group's ingress rules: (protocol, from, to) -> the source groups; a port given by
    a parameter is the parameter's name."""
    sources: dict[tuple[str, Any, Any], set[str]] = {}
    for rule in (r["Properties"] for r in resources_of(
            template, "AWS::EC2::SecurityGroupIngress").values()):
        assert "CidrIp" not in rule, "task ports are never open to an address range"
        if rule["GroupId"] == {"Ref": group}:
            key = (rule["IpProtocol"], _port(rule["FromPort"]), _port(rule["ToPort"]))
            sources.setdefault(key, set()).add(rule["SourceSecurityGroupId"]["Ref"])
    return sources


def test_instance_ports_open_only_to_the_alb_the_sweep_and_each_other(
        template: dict[str, Any]) -> None:
    groups = {r["Properties"]["GroupId"]["Ref"] for r in resources_of(
        template, "AWS::EC2::SecurityGroupIngress").values()}
    assert groups == {"InstanceSecurityGroup", "TaskSecurityGroup"}
    sources = _ingress(template, "InstanceSecurityGroup")
    assert sources == {
        ("tcp", 32768, 65535): {"LoadBalancerSecurityGroup", "SweepSecurityGroup",
                                "InstanceSecurityGroup"},
        ("udp", 2000, 2000): {"InstanceSecurityGroup"},
        ("tcp", 2000, 2000): {"InstanceSecurityGroup"},
    }
    assert "SecurityGroupIngress" not in template["Resources"]["InstanceSecurityGroup"][
        "Properties"]
    sweep = template["Resources"]["SweepFunction"]["Properties"]
    assert sweep["VpcConfig"]["SecurityGroupIds"] == [{"Ref": "SweepSecurityGroup"}]


def test_the_sweep_reaches_awsvpc_tasks_that_attach_the_task_group(
        template: dict[str, Any]) -> None:
    """awsvpc/Fargate tasks (registered at their ENI address by the task-events Lambda) are
    checked on their container ports: the sweep's group may go there and the task group lets
    it in, on the same ports; a service attaches the group through the stack's export."""
    ports = ("TaskPortFrom", "TaskPortTo")
    assert _ingress(template, "TaskSecurityGroup") == {
        ("tcp", *ports): {"SweepSecurityGroup", "InstanceSecurityGroup", "TaskSecurityGroup"}}
    res = template["Resources"]
    egress = [(r["IpProtocol"], _port(r["FromPort"]), _port(r["ToPort"]))
              for r in res["SweepSecurityGroup"]["Properties"]["SecurityGroupEgress"]
              if r.get("DestinationSecurityGroupId") == {"Ref": "TaskSecurityGroup"}]
    assert egress == [("tcp", *ports)]
    assert "SecurityGroupIngress" not in res["TaskSecurityGroup"]["Properties"]
    params = template["Parameters"]
    assert (params["TaskPortFrom"]["Default"], params["TaskPortTo"]["Default"]) == (1, 65535)
    output = template["Outputs"]["TaskSecurityGroupId"]
    assert output["Value"] == {"Ref": "TaskSecurityGroup"}
    assert output["Export"]["Name"] == {"Fn::Sub": "${AWS::StackName}-TaskSecurityGroupId"}


def test_schedule_and_task_state_rule(template: dict[str, Any]) -> None:
    res = template["Resources"]
    assert res["SweepSchedule"]["Properties"]["ScheduleExpression"] == "rate(5 minutes)"
    assert refs(res["SweepSchedule"]["Properties"]["Targets"]) == {"SweepFunction"}
    pattern = res["TaskEventsRule"]["Properties"]["EventPattern"]
    assert pattern == {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
                       "detail": {"clusterArn": [{"Fn::GetAtt": ["Cluster", "Arn"]}]}}
    # The reconcile runs as often as the sweep: a task is registered or cleaned up within one.
    reconcile = res["TaskReconcileSchedule"]["Properties"]
    assert reconcile["ScheduleExpression"] == res["SweepSchedule"]["Properties"][
        "ScheduleExpression"]
    (target,) = reconcile["Targets"]  # no Input: the function sees the "Scheduled Event"
    assert refs(target) == {"TaskEventsFunction"} and "Input" not in target
    # ECS sends no event on a health change: the health follow-up, every minute.
    health = res["TaskHealthSchedule"]["Properties"]
    assert health["ScheduleExpression"] == "rate(1 minute)"
    (target,) = health["Targets"]
    assert refs(target) == {"TaskEventsFunction"}
    assert reconcile_scope(json.loads(target["Input"])) is Scope.HEALTH
    for permission, rule in (("SweepPermission", "SweepSchedule"),
                             ("TaskEventsPermission", "TaskEventsRule"),
                             ("TaskReconcilePermission", "TaskReconcileSchedule"),
                             ("TaskHealthPermission", "TaskHealthSchedule")):
        props = res[permission]["Properties"]
        assert props["Principal"] == "events.amazonaws.com"
        assert props["SourceArn"] == {"Fn::GetAtt": [rule, "Arn"]}


def test_task_events_failures_go_to_an_alarmed_queue(template: dict[str, Any]) -> None:
    """An event the task-events Lambda still fails on after its retries is kept (with the
    error) in a queue the function's role may send to, and an alarm watches that queue."""
    res = template["Resources"]
    (config,) = resources_of(template, "AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert props["FunctionName"] == {"Ref": "TaskEventsFunction"}
    assert props["Qualifier"] == "$LATEST"
    assert props["MaximumRetryAttempts"] == 2
    assert 60 <= props["MaximumEventAgeInSeconds"] <= 21600
    assert props["DestinationConfig"] == {"OnFailure": {"Destination": {
        "Fn::GetAtt": ["TaskEventsFailureQueue", "Arn"]}}}
    (send,) = [s for s in statements(template) if "sqs:SendMessage" in s.actions
               and s.role == "TaskEventsRole"]
    assert send.actions == ("sqs:SendMessage",) and refs(list(send.resources)) == {
        "TaskEventsFailureQueue"}
    queue = res["TaskEventsFailureQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True and queue["MessageRetentionPeriod"] == 1209600
    alarm = res["TaskEventsFailureAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (
        "AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {
        "Fn::GetAtt": ["TaskEventsFailureQueue", "QueueName"]}}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}],
                                                {"Ref": "AWS::NoValue"}]}


# --- consistency with the code -------------------------------------------------------------

EXAMPLES = {"time": "TimeTaskDefinition", "calc": "CalcTaskDefinition",
            "portal": "PortalTaskDefinition"}


def listening_port(service: str) -> int:
    """``PORT = <n>`` in examples/<service>/app.py: the port the service listens on."""
    tree = ast.parse((ROOT / "examples" / service / "app.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "PORT" for t in node.targets)):
            return int(ast.literal_eval(node.value))
    raise AssertionError(f"examples/{service}/app.py defines no PORT")


@pytest.mark.parametrize("service", sorted(EXAMPLES))
def test_example_task_definitions_match_the_examples(template: dict[str, Any], service: str) -> None:
    (ours,) = template["Resources"][EXAMPLES[service]]["Properties"]["ContainerDefinitions"]
    snippet = json.loads((ROOT / "examples" / service / "taskdef.json").read_text())
    (theirs,) = snippet["containerDefinitions"]
    port = listening_port(service)

    assert [(p["ContainerPort"], p["HostPort"], p["Protocol"]) for p in ours["PortMappings"]] \
        == [(m["containerPort"], m["hostPort"], m["protocol"]) for m in theirs["portMappings"]] \
        == [(port, 0, "tcp")]
    ours_env = {e["Name"]: e["Value"] for e in ours["Environment"]}
    theirs_env = {e["name"]: e["value"] for e in theirs["environment"]}
    service_vars = {k: v for k, v in ours_env.items() if re.fullmatch(r"SERVICE_\d+_NAME", k)}
    assert service_vars == {k: v for k, v in theirs_env.items()
                            if re.fullmatch(r"SERVICE_\d+_NAME", k)}
    assert all(k == f"SERVICE_{port}_NAME" for k in service_vars)
    assert set(theirs_env) <= set(ours_env), "a setting of the snippet is missing"
    for name, value in theirs_env.items():
        if isinstance(ours_env[name], str) and name not in ("AUTH_USER", "AUTH_PASSWORD"):
            assert ours_env[name] == value, name
    assert ours_env["AWS_XRAY_DAEMON_ADDRESS"] == {"Fn::Sub": "xray.${ZoneName}:2000"}
    assert ours["HealthCheck"]["Command"] == theirs["healthCheck"]["command"]
    # The health check asks the port in the image's PORT variable: the same port.
    dockerfile = (ROOT / "examples" / service / "Dockerfile").read_text()
    assert re.findall(r"\bPORT=(\d+)", dockerfile) == [str(port)]
    assert ours["Name"] == theirs["name"] == service


def test_portal_behind_the_load_balancer_on_its_port(template: dict[str, Any]) -> None:
    res = template["Resources"]
    (binding,) = res["PortalService"]["Properties"]["LoadBalancers"]
    assert binding["ContainerName"] == "portal"
    assert binding["ContainerPort"] == listening_port("portal")
    assert binding["TargetGroupArn"] == {"Ref": "PortalTargetGroup"}
    assert res["PortalListener"]["Properties"]["DefaultActions"][0]["TargetGroupArn"] == {
        "Ref": "PortalTargetGroup"}
    assert "LoadBalancer" in refs(template["Outputs"]["PortalUrl"]["Value"])
    assert {"PortalUrl", "HostedZoneId", "ClusterName"} <= set(template["Outputs"])


def test_example_images_default_to_the_names_the_examples_build(template: dict[str, Any]) -> None:
    from examples.images import image_name

    for service, logical in EXAMPLES.items():
        (container,) = template["Resources"][logical]["Properties"]["ContainerDefinitions"]
        default = container["Image"]["Fn::If"][1]["Fn::Sub"]
        assert default.endswith("/" + image_name(service)), default


def test_xray_daemon_is_published_by_the_task_events_function(template: dict[str, Any]) -> None:
    res = template["Resources"]
    xray = res["XRayService"]["Properties"]
    env = res["TaskEventsFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TASK_GROUP"] == {"Fn::Sub": "service:" + xray["ServiceName"]["Fn::Sub"]}
    assert env["RR_NAME"] == {"Fn::Sub": "xray.${ZoneName}"}
    (daemon,) = res["XRayTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert daemon["Image"] == {"Ref": "XRayDaemonImage"}
    assert template["Parameters"]["XRayDaemonImage"]["Default"].startswith(
        "public.ecr.aws/xray/aws-xray-daemon")
    assert {(p["HostPort"], p["Protocol"]) for p in daemon["PortMappings"]} == {
        (2000, "udp"), (2000, "tcp")}
    task_role = res["XRayTaskDefinition"]["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    assert res[task_role]["Properties"]["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"}]


def test_lambda_environment_is_what_the_code_reads(template: dict[str, Any]) -> None:
    sweep_env = template["Resources"]["SweepFunction"]["Properties"]["Environment"]["Variables"]
    assert set(sweep_env) <= {f.metadata["env"] for f in fields(SweepSettings)}
    events_env = template["Resources"]["TaskEventsFunction"]["Properties"]["Environment"][
        "Variables"]
    read = {f.metadata["env"] for f in fields(TaskEventSettings)}
    assert set(events_env) <= read, set(events_env) - read
    writer_env = template["Resources"]["ZoneWriterFunction"]["Properties"]["Environment"][
        "Variables"]
    assert set(writer_env) <= {f.name.upper() for f in fields(WriterSettings)}
    # The zone, the host states, and the queue to hand back the hosts it did not finish.
    assert {"HOSTED_ZONE_ID", "HOST_TABLE", "CHANGE_QUEUE"} <= set(writer_env)


def test_lambda_handlers_exist_in_the_package(template: dict[str, Any], tmp_path: Path) -> None:
    import zipfile

    package_lambda.build(tmp_path / "ecssd-lambda.zip")
    with zipfile.ZipFile(tmp_path / "ecssd-lambda.zip") as archive:
        names = set(archive.namelist())
        for function in resources_of(template, "AWS::Lambda::Function").values():
            module, _, func = function["Properties"]["Handler"].rpartition(".")
            path = module.replace(".", "/") + ".py"
            assert path in names, f"{path} is not in the zip"
            tree = ast.parse(archive.read(path))
            assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body)
            assert function["Properties"]["Code"] == {
                "S3Bucket": {"Ref": "LambdaCodeBucket"}, "S3Key": {"Ref": "LambdaCodeKey"}}
    assert template["Parameters"]["LambdaCodeKey"]["Default"] == package_lambda.DEFAULT_OUTPUT.name


# --- the other deployable artifacts --------------------------------------------------------


def dockerfile_args() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))


def test_agent_image_runs_unprivileged_with_a_health_check(template: dict[str, Any]) -> None:
    text = (ROOT / "Dockerfile").read_text()
    args = dockerfile_args()
    assert args["BASE_IMAGE"] == "python:3.12-slim"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), users
    assert "--groups docker" in text
    (health,) = re.findall(r"^HEALTHCHECK (?:.*\\\n)*.*", text, flags=re.MULTILINE)
    assert "/healthz" in health and "ECSSD_STATUS_PORT" in health and "curl" not in health
    assert re.search(r'^ENTRYPOINT \["ecssd-agent"\]$', text, flags=re.MULTILINE)
    # The GID the launch template grants on the socket is the image's docker group.
    assert str(template["Parameters"]["AgentSocketGroupId"]["Default"]) == args["DOCKER_GID"]
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[0] != "!" and "*" in ignore and "!ecssd_agent/" in ignore


def test_systemd_unit_removes_this_hosts_records_on_stop(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "ecssd-agent.service")
    service = unit["Service"]
    start, stop = service["ExecStart"].split(), service["ExecStopPost"].split()
    scripts = re.findall(r"^(\S+) = ", (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert Path(start[0]).name == Path(stop[0]).name == "ecssd-agent" and "ecssd-agent" in scripts
    assert "--deregister-on-exit" in start and stop[1:] == ["--remove"]
    assert service["User"] != "root" and "docker" in service["SupplementaryGroups"].split()
    analyze = shutil.which("systemd-analyze")
    agent = shutil.which("ecssd-agent")
    if analyze is None or agent is None:
        skip_or_fail("systemd-analyze or ecssd-agent not installed: unit syntax not verified")
    # verify checks that the binaries exist: point it at the agent installed here.
    copy = tmp_path / "ecssd-agent.service"
    copy.write_text((ROOT / "deploy" / "ecssd-agent.service").read_text().replace(
        "/opt/ecssd/bin/ecssd-agent", agent))
    proc = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


# --- deploying in moto ---------------------------------------------------------------------


def moto_supported_types() -> set[str]:
    from moto.cloudformation.parsing import get_model_map

    return set(get_model_map())


def subset(template: Mapping[str, Any], unsupported: set[str]) -> tuple[dict[str, Any], set[str]]:
    """The template without unsupported resources and whatever refers to them (transitively)."""
    resources = dict(template["Resources"])
    removed = {k for k, v in resources.items() if v["Type"] in unsupported}
    while True:
        more = {k for k, v in resources.items() if k not in removed and (
            refs(v) | set(as_list(v.get("DependsOn", [])))) & removed}
        if not more:
            break
        removed |= more
    out = json.loads(json.dumps(template))
    out["Resources"] = {k: v for k, v in resources.items() if k not in removed}
    out["Outputs"] = {k: v for k, v in template.get("Outputs", {}).items()
                      if not refs(v) & removed}
    return out, removed


@dataclass
class Stack:
    aws: MotoServer
    template: dict[str, Any]
    parameters: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)
    physical: dict[str, str] = field(default_factory=dict)
    left_out: set[str] = field(default_factory=set)

    def client(self, service: str) -> Any:
        return self.aws.client(service)


def deploy(aws: MotoServer, tmp_path: Path, **overrides: str) -> Stack:
    """Build the zip, upload it, create the stack (the moto-creatable subset) and wait."""
    template = load_template()
    unsupported = {r["Type"] for r in template["Resources"].values()} - moto_supported_types()
    print(f"resource types moto cannot create (left out): {sorted(unsupported) or 'none'}")
    assert unsupported == KNOWN_UNSUPPORTED
    body, removed = subset(template, unsupported)
    if removed:
        print(f"resources left out with them: {sorted(removed)}")

    zip_path = tmp_path / "ecssd-lambda.zip"
    package_lambda.build(zip_path)
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="ecssd-code")
    s3.put_object(Bucket="ecssd-code", Key="ecssd-lambda.zip", Body=zip_path.read_bytes())
    parameters = {"LambdaCodeBucket": "ecssd-code", "ExamplePassword": PASSWORD, **overrides}
    expected = active_resources(body, condition_values(template, parameters))
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(body),
                     Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                 for k, v in parameters.items()])

    def finished() -> dict[str, Any] | None:
        stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
        return None if stack["StackStatus"].endswith("_IN_PROGRESS") else stack

    stack = wait_for(finished, timeout=60, what="the stack to finish creating")
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    listed = cfn.describe_stack_resources(StackName=STACK)["StackResources"]
    # moto 5.2 lists a resource whose Condition is false as an entry without a logical id.
    created = [r for r in listed if "LogicalResourceId" in r]
    assert len(listed) - len(created) == len(body["Resources"]) - len(expected)
    status = {r["LogicalResourceId"]: r["ResourceStatus"] for r in created}
    assert status == dict.fromkeys(expected, "CREATE_COMPLETE")
    return Stack(aws, template, parameters,
                 outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
                 physical={r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
                           for r in created},
                 left_out=removed)


def test_stack_is_created_in_moto_and_is_what_it_says(aws: MotoServer, tmp_path: Path) -> None:
    """Created, and wired as intended, as far as moto keeps what it is given.

    moto 5.2 creates these resources but drops some properties (checked in the template by
    the tests above instead): a hosted zone's VPCs (every CloudFormation zone is public), a
    VPC's DNS attributes, a service's SchedulingStrategy, LoadBalancers and
    DeploymentConfiguration, a task definition's NetworkMode and TaskRoleArn, managed
    policy attachments, a security group's inline egress rules (the sweep's egress to the
    task group is checked on the template); and it gives inline policies back as Python
    text, not JSON. What a
    role allows is checked on the template and by running the code against its roles.
    """
    stack = deploy(aws, tmp_path)
    phys, out = stack.physical, stack.outputs
    assert out["PortalUrl"].startswith("http://") and out["ClusterName"] == phys["Cluster"]
    zone_id, cluster = out["HostedZoneId"], out["ClusterName"]

    zone = stack.client("route53").get_hosted_zone(Id=zone_id)
    assert zone["HostedZone"]["Name"].rstrip(".") == "servicediscovery.internal"

    ec2 = stack.client("ec2")
    version = ec2.describe_launch_template_versions(
        LaunchTemplateId=phys["LaunchTemplate"])["LaunchTemplateVersions"][0]
    data = version["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["ImageId"].startswith("ami-")  # resolved from the public SSM parameter
    (group,) = stack.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[phys["AutoScalingGroup"]])["AutoScalingGroups"]
    assert group["LaunchTemplate"]["LaunchTemplateId"] == phys["LaunchTemplate"]
    assert "LaunchConfigurationName" not in group
    assert set(group["VPCZoneIdentifier"].split(",")) == {phys["PrivateSubnetA"],
                                                         phys["PrivateSubnetB"]}
    (instance_sg,) = ec2.describe_security_groups(
        GroupIds=[phys["InstanceSecurityGroup"]])["SecurityGroups"]
    task_ports = [p for p in instance_sg["IpPermissions"] if p["FromPort"] == 32768]
    assert [p["ToPort"] for p in task_ports] == [65535] and not task_ports[0]["IpRanges"]
    assert {g["GroupId"] for g in task_ports[0]["UserIdGroupPairs"]} == {
        phys["LoadBalancerSecurityGroup"], phys["SweepSecurityGroup"],
        phys["InstanceSecurityGroup"]}

    ecs = stack.client("ecs")
    (agent,) = ecs.describe_services(cluster=cluster, services=[phys["AgentService"]])[
        "services"]
    taskdef = ecs.describe_task_definition(taskDefinition=agent["taskDefinition"])[
        "taskDefinition"]
    (container,) = taskdef["containerDefinitions"]
    assert container["command"] == ["--deregister-on-exit"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    # The default is the queued mode (tests/integration/test_cloudformation_queued.py).
    assert env["ECSSD_DOMAIN"] == "servicediscovery.internal"
    assert env["ECSSD_HOST_TABLE"] == out["HostTableName"]
    assert taskdef["volumes"] == [{"name": "docker-socket",
                                   "host": {"sourcePath": "/var/run/docker.sock"}}]
    (xray,) = ecs.describe_services(cluster=cluster, services=[phys["XRayService"]])[
        "services"]

    lam = stack.client("lambda")
    sweep = lam.get_function_configuration(FunctionName=phys["SweepFunction"])
    assert sweep["Handler"] == "health_lambda.handler.lambda_handler"
    assert sweep["VpcConfig"]["SecurityGroupIds"] == [phys["SweepSecurityGroup"]]
    assert set(sweep["VpcConfig"]["SubnetIds"]) == {phys["PrivateSubnetA"],
                                                   phys["PrivateSubnetB"]}
    assert sweep["Environment"]["Variables"]["ECS_CLUSTERS"] == cluster
    events_fn = lam.get_function_configuration(FunctionName=phys["TaskEventsFunction"])
    assert events_fn["Handler"] == "health_lambda.task_events.lambda_handler"
    variables = events_fn["Environment"]["Variables"]
    assert variables["HOSTED_ZONE_ID"] == zone_id
    assert variables["TASK_GROUP"] == "service:" + xray["serviceName"]

    events = stack.client("events")
    assert events.describe_rule(Name=phys["SweepSchedule"])["ScheduleExpression"] == \
        "rate(5 minutes)"
    (target,) = events.list_targets_by_rule(Rule=phys["SweepSchedule"])["Targets"]
    assert target["Arn"] == sweep["FunctionArn"]
    rule = events.describe_rule(Name=phys["TaskEventsRule"])
    cluster_arn = ecs.describe_clusters(clusters=[cluster])["clusters"][0]["clusterArn"]
    assert json.loads(rule["EventPattern"])["detail"]["clusterArn"] == [cluster_arn]
    (target,) = events.list_targets_by_rule(Rule=phys["TaskEventsRule"])["Targets"]
    assert target["Arn"] == events_fn["FunctionArn"]
    (target,) = events.list_targets_by_rule(Rule=phys["TaskReconcileSchedule"])["Targets"]
    assert target["Arn"] == events_fn["FunctionArn"]

    # awsvpc tasks: the group services attach lets the sweep (and callers) in on task ports.
    assert out["TaskSecurityGroupId"] == phys["TaskSecurityGroup"]
    (task_sg,) = ec2.describe_security_groups(
        GroupIds=[phys["TaskSecurityGroup"]])["SecurityGroups"]
    assert [(p["FromPort"], p["ToPort"], p["IpRanges"]) for p in task_sg["IpPermissions"]] == [
        (1, 65535, [])]
    assert {g["GroupId"] for g in task_sg["IpPermissions"][0]["UserIdGroupPairs"]} == {
        phys["SweepSecurityGroup"], phys["InstanceSecurityGroup"], phys["TaskSecurityGroup"]}
    assert out["TaskEventsFailureQueueUrl"].endswith("/" + phys["TaskEventsFailureQueue"]
                                                     .rsplit("/", 1)[-1])

    elb = stack.client("elbv2")
    (listener,) = elb.describe_listeners(LoadBalancerArn=phys["LoadBalancer"])["Listeners"]
    assert listener["Port"] == 80
    assert listener["DefaultActions"][0]["TargetGroupArn"] == phys["PortalTargetGroup"]
    (target_group,) = elb.describe_target_groups(
        TargetGroupArns=[phys["PortalTargetGroup"]])["TargetGroups"]
    assert (target_group["HealthCheckPath"], target_group["HealthCheckPort"]) == (
        "/health", "traffic-port")

    iam = stack.client("iam")
    for role in ("AgentTaskRole", "SweepRole", "TaskEventsRole", "XRayTaskRole", "InstanceRole",
                 "ZoneWriterRole"):
        assert iam.get_role(RoleName=phys[role])["Role"]["Arn"].endswith("/" + phys[role])


def test_subset_leaves_out_dependents_transitively() -> None:
    """The subset logic itself, on a template where something must be left out."""
    template = {"Resources": {
        "A": {"Type": "AWS::Nope::Thing"},
        "B": {"Type": "AWS::EC2::VPC", "Properties": {"X": {"Fn::GetAtt": ["A", "Arn"]}}},
        "C": {"Type": "AWS::EC2::Subnet", "Properties": {"V": {"Fn::Sub": "${B}-x"}}},
        "D": {"Type": "AWS::EC2::Subnet", "DependsOn": "C"},
        "E": {"Type": "AWS::EC2::VPC"},
    }, "Outputs": {"O": {"Value": {"Ref": "D"}}, "P": {"Value": {"Ref": "E"}}}}
    out, removed = subset(template, {"AWS::Nope::Thing"})
    assert removed == {"A", "B", "C", "D"} and set(out["Resources"]) == {"E"}
    assert set(out["Outputs"]) == {"P"}


# --- least privilege is also enough privilege ----------------------------------------------


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    cluster: str  # the "cluster" a JSON (ECS) call names, else ""
    path: str
    #: A JSON call's parameters (DynamoDB, ECS...): what a condition key such as
    #: dynamodb:LeadingKeys is evaluated on. Empty for other protocols.
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def action(self) -> str:
        return f"{self.service}:{self.operation}"


class _RestOperations:
    """Operation name of a REST request (Route 53 et al.) from botocore's service model."""

    def __init__(self) -> None:
        self._session = botocore.session.get_session()
        self._routes: dict[str, list[tuple[str, re.Pattern[str], int, str]]] = {}

    def _load(self, service: str) -> list[tuple[str, re.Pattern[str], int, str]]:
        if service not in self._routes:
            model = self._session.get_service_model(service)
            routes = []
            for name in model.operation_names:
                spec = model.operation_model(name).http
                uri = spec["requestUri"].split("?", 1)[0]
                pattern = re.sub(r"\\\{[^}]+\\\+\\\}", ".+", re.escape(uri))
                pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
                literal = len(re.sub(r"\{[^}]+\}", "", uri))  # the more literal, the better
                routes.append((spec["method"], re.compile(pattern + "/?$"), literal, name))
            self._routes[service] = routes
        return self._routes[service]

    def find(self, service: str, method: str, path: str) -> str:
        matches = [(literal, name) for verb, pattern, literal, name in self._load(service)
                   if verb == method and pattern.match(path)]
        assert matches, f"no {service} operation for {method} {path}"
        return max(matches)[1]


class RecordingProxy:
    """An HTTP proxy to the moto server that records which AWS operation each request is."""

    def __init__(self, upstream: str) -> None:
        self.calls: list[Call] = []
        parts = urlsplit(upstream)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        rest = _RestOperations()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.calls.append(proxy.identify(self.command, self.path, self.headers, body,
                                                  rest))
                conn = http.client.HTTPConnection(host, port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection",
                                           "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def identify(method: str, path: str, headers: Any, body: bytes, rest: _RestOperations) -> Call:
        scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request",
                          headers.get("Authorization", ""))
        assert scope, f"unsigned request {method} {path}"
        service = scope.group(1)
        target = headers.get("X-Amz-Target")
        if target:
            payload = json.loads(body or b"{}")
            return Call(service, target.rsplit(".", 1)[-1], str(payload.get("cluster", "")), path,
                        payload)
        if method == "POST" and b"Action=" in body:
            action = parse_qs(body.decode())["Action"][0]
            return Call(service, action, "", path)
        return Call(service, rest.find(service, method, urlsplit(path).path), "", path)

    def take(self) -> list[Call]:
        calls, self.calls = self.calls, []
        return calls

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(aws: MotoServer) -> Iterator[RecordingProxy]:
    recorder = RecordingProxy(aws.url)
    try:
        yield recorder
    finally:
        recorder.close()


#: SQS authorises its batch operations as the single ones: the Service Authorization
#: Reference has no sqs:DeleteMessageBatch action.
SQS_BATCH_ACTIONS = {"DeleteMessageBatch": "DeleteMessage", "SendMessageBatch": "SendMessage",
                     "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}


def iam_actions(calls: list[Call]) -> list[Call]:
    """The calls as the IAM actions that authorise them."""
    return [replace(c, operation=SQS_BATCH_ACTIONS.get(c.operation, c.operation))
            if c.service == "sqs" else c for c in calls]


def check_calls(calls: list[Call], allowed: set[str], zone_id: str, cluster: str) -> None:
    assert calls, "no AWS call was recorded"
    print(f"AWS calls made: {sorted({c.action for c in calls})}")
    denied = sorted({c.action for c in iam_actions(calls)} - allowed)
    assert denied == [], f"calls the role does not allow: {denied}"
    for call in calls:
        if call.service == "route53":
            zone = re.search(r"/hostedzone/([^/?]+)", call.path)
            assert zone is None or zone.group(1) == zone_id, call
        if call.cluster:
            assert call.cluster.rsplit("/", 1)[-1] == cluster, call


LOOPBACK_VPC = {"VpcCidr": "127.0.0.0/16", "PublicSubnetACidr": "127.0.0.0/20",
                "PublicSubnetBCidr": "127.0.16.0/20", "PrivateSubnetACidr": "127.0.32.0/20",
                "PrivateSubnetBCidr": "127.0.48.0/20"}


class _Docker:
    def __init__(self, containers: list[Container]) -> None:
        self._containers = containers

    def containers(self) -> list[Container]:
        return list(self._containers)


@dataclass
class LiveHost:
    ip: str
    label: str
    container_instance: str


def _healthy_server(ip: str) -> tuple[http.server.HTTPServer, int]:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((ip, 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def _refusing_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _event(ecs: Any, cluster: str, task_arn: str) -> dict[str, Any]:
    """The ECS Task State Change event for a task, in the documented shape."""
    described = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
    detail = json.loads(json.dumps(described, default=lambda v: v.isoformat()
                                   if isinstance(v, datetime) else str(v)))
    for container in detail.get("containers", []):
        container["lastStatus"] = detail["lastStatus"]
        container.setdefault("networkBindings", [])
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "ECS Task State Change",
            "source": "aws.ecs", "account": "123456789012", "region": REGION,
            "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "resources": [task_arn], "detail": detail}


def _function_env(stack: Stack, logical: str) -> dict[str, str]:
    config = stack.client("lambda").get_function_configuration(
        FunctionName=stack.physical[logical])
    return dict(config["Environment"]["Variables"])


def test_lambdas_need_no_more_than_their_roles_allow(
        aws: MotoServer, proxy: RecordingProxy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Run both functions, configured as the stack configured them, on the stack's own
    cluster and zone; every call must be allowed by the function's role and aimed at them."""
    aws.manual_ecs_transitions()
    stack = deploy(aws, tmp_path, **LOOPBACK_VPC)
    conditions = condition_values(stack.template, stack.parameters)
    cluster, zone_id = stack.outputs["ClusterName"], stack.outputs["HostedZoneId"]
    ec2, ecs, route53 = stack.client("ec2"), stack.client("ecs"), stack.client("route53")

    # A live host of the cluster (in the stack's private subnet, on loopback) ...
    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                    SubnetId=stack.physical["PrivateSubnetA"],
                                    PrivateIpAddress="127.0.32.10")
    instance = reservation["Instances"][0]
    registered = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=json.dumps(
        {"instanceId": instance["InstanceId"]}))["containerInstance"]
    host = LiveHost("127.0.32.10", instance["PrivateDnsName"].split(".")[0],
                 registered["containerInstanceArn"])

    def start(logical: str, group: str) -> str:
        started = ecs.start_task(cluster=cluster, taskDefinition=stack.physical[logical],
                                 containerInstances=[host.container_instance], group=group)
        return str(started["tasks"][0]["taskArn"])

    # ... running a healthy and an unhealthy time task, and the X-Ray daemon.
    healthy_task, sick_task = start("TimeTaskDefinition", "service:time"), start(
        "TimeTaskDefinition", "service:time")
    xray_group = "service:" + stack.physical["XRayService"].rsplit("/", 1)[-1]
    xray_task = start("XRayTaskDefinition", xray_group)
    server, healthy_port = _healthy_server(host.ip)
    sick_port = _refusing_port(host.ip)

    zone = Route53Zone(route53, find_zone(route53, "", zone_id))

    def time_container(task: str, port: int) -> Container:
        return Container(id=uuid.uuid4().hex * 2, name="ecs-time", env={"SERVICE_8082_NAME":
                         "_time._tcp"}, labels={ECS_TASK_ARN: task, ECS_CLUSTER: cluster,
                         ECS_CONTAINER_NAME: "time"}, ports={"8082/tcp": (port,)})

    # Records as the agents write them: this host's, and those of a host that is gone.
    Agent(DirectSink(zone), _Docker([time_container(healthy_task, healthy_port),  # type: ignore[arg-type]
                         time_container(sick_task, sick_port)]),
          Host(host.label, host.ip), Routing.WEIGHTED).sync()
    gone = time_container(f"arn:aws:ecs:{REGION}:123456789012:task/{cluster}/{'f' * 32}", 40000)
    Agent(DirectSink(zone), _Docker([gone]), Host("ip-127-0-33-99", "127.0.33.99"),  # type: ignore[arg-type]
          Routing.WEIGHTED).sync()
    assert proxy.take() == []  # the set-up talked to moto directly

    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        # The sweep, as configured by the stack (fast for the test; the gone host's records
        # are most of this small zone, so the delete-fraction guard is off).
        env = _function_env(stack, "SweepFunction")
        env.update(GRACE_SECONDS="0", MAX_DELETE_FRACTION="1", CHECK_TIMEOUT="0.5",
                   CHECK_RETRIES="1")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # What real ECS reports and moto does not: the time containers' port bindings, and
        # their healthCheck's verdict (moto says HEALTHY for every container).
        reported = {healthy_task: (healthy_port, "HEALTHY"), sick_task: (sick_port, "UNHEALTHY")}

        def ecs_reports(parsed: dict[str, Any], **_: Any) -> None:
            for raw in parsed.get("tasks", []):
                port, health = reported.get(raw.get("taskArn", ""), (0, ""))
                for container in raw.get("containers", []) if port else []:
                    container["healthStatus"] = health
                    container["networkBindings"] = [{"bindIP": "0.0.0.0", "hostPort": port,
                                                     "containerPort": 8082, "protocol": "tcp"}]

        def clients() -> Clients:
            made = Clients(region=REGION)
            made.client("ecs").meta.events.register("after-call.ecs.DescribeTasks", ecs_reports)
            return made

        # Two runs: the sick task fails CHECK_FAILURES (2) sweeps in a row, the first count
        # kept as a tag of the task (TagResource, under the role too).
        for _ in range(int(env["CHECK_FAILURES"])):
            sweep_handler.runtime.reset(lambda: sweep_handler.build(clients=clients()))
            summary = sweep_handler.lambda_handler({"source": "aws.events"}, None)
            assert summary["errors"] == [], summary
        calls = proxy.take()
        check_calls(calls, role_actions(stack.template, "SweepRole", conditions),
                    zone_id, cluster)
        # The failure count's tag: what ThisClusterTaskFailureCounts's conditions allow.
        (tagged,) = [c for c in calls if c.action == "ecs:TagResource"]
        assert tagged.params["resourceArn"] == sick_task
        assert [t["key"] for t in tagged.params["tags"]] == [
            f"ecssd:check-failures:{sick_port}"]
        states = {t["taskArn"]: t["desiredStatus"] for t in ecs.describe_tasks(
            cluster=cluster, tasks=[healthy_task, sick_task])["tasks"]}
        assert states == {healthy_task: "RUNNING", sick_task: "STOPPED"}, summary
        owners = {r.set_identifier or "" for r in zone.records() if r.type == "SRV"}
        assert any(o.endswith(task_id(healthy_task)) for o in owners)
        assert not any("ip-127-0-33-99" in o or o.endswith(task_id(sick_task))
                       for o in owners), owners

        # The task-events function, as configured by the stack, on the X-Ray daemon's event.
        for key, value in _function_env(stack, "TaskEventsFunction").items():
            monkeypatch.setenv(key, value)
        task_events.runtime.reset()
        result = task_events.lambda_handler(_event(ecs, cluster, xray_task), None)
        check_calls(proxy.take(), role_actions(stack.template, "TaskEventsRole", conditions),
                    zone_id, cluster)
        xray = [r for r in zone.records() if r.name == "xray.servicediscovery.internal."]
        assert [r.values for r in xray] == [(host.ip,)], result

        # The same function invoked by its schedule: the reconcile reads the whole cluster.
        result = task_events.lambda_handler({"source": "aws.events", "detail-type":
                                             "Scheduled Event", "detail": {}}, None)
        assert result["reason"] == "reconcile" and result["errors"] == [], result
        calls = proxy.take()
        assert {"ecs:ListTasks", "ecs:DescribeTasks"} <= {c.action for c in calls}
        check_calls(calls, role_actions(stack.template, "TaskEventsRole", conditions),
                    zone_id, cluster)
        (health,) = stack.template["Resources"]["TaskHealthSchedule"]["Properties"]["Targets"]
        result = task_events.lambda_handler(json.loads(health["Input"]), None)
        assert result["scope"] == "health" and result["errors"] == [], result
        check_calls(proxy.take(), role_actions(stack.template, "TaskEventsRole", conditions),
                    zone_id, cluster)
    finally:
        sweep_handler.runtime.reset()
        task_events.runtime.reset()
        server.shutdown()
        server.server_close()


def agent_task_env(stack: Stack) -> dict[str, str]:
    """The agent container's environment as ECS would give it, for this stack."""
    (container,) = stack.template["Resources"]["AgentTaskDefinition"]["Properties"][
        "ContainerDefinitions"]
    conditions = condition_values(stack.template, stack.parameters)
    resolved: dict[str, Callable[[], str]] = {
        "HostedZone": lambda: stack.outputs["HostedZoneId"],
        "HostTable": lambda: stack.physical["HostTable"],
        "ChangeQueue": lambda: stack.physical["ChangeQueue"],  # a queue's Ref: its URL
        "AWS::Region": lambda: REGION,
    }
    env = {}
    for name, value in container_env(container, conditions).items():
        if isinstance(value, dict):
            ref = value["Ref"]
            value = resolved[ref]() if ref in resolved else stack.parameters.get(
                ref, str(stack.template["Parameters"][ref].get("Default", "")))
        env[name] = str(value)
    return env


def run_agent(stack: Stack, docker_engine: DockerEngine, endpoint: str, *modes: str) -> None:
    """The agent CLI on a host ip-127-0-0-1, configured as the stack configures it."""
    env = {**stack.aws.env(), **agent_task_env(stack), "AWS_ENDPOINT_URL": endpoint}
    agent = Path(sys.executable).with_name("ecssd-agent")
    command = [str(agent) if agent.exists() else "ecssd-agent", "--hostname", "ip-127-0-0-1",
               "--host-ip", "127.0.0.1", "--docker-host", docker_engine.base_url]
    for mode in modes:
        proc = subprocess.run([*command, mode], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr


def test_direct_agent_needs_no_more_than_its_role_allows(
        aws: MotoServer, proxy: RecordingProxy, tmp_path: Path,
        docker_engine: DockerEngine) -> None:
    """Direct mode: the agent CLI, with the task definition's ECSSD_ settings, syncs and
    removes through Route 53 (the queued mode's test: test_cloudformation_queued.py)."""
    stack = deploy(aws, tmp_path, AgentWriteMode="direct")
    conditions = condition_values(stack.template, stack.parameters)
    run_agent(stack, docker_engine, proxy.url, "--sync", "--remove")
    calls = proxy.take()
    check_calls(calls, role_actions(stack.template, "AgentTaskRole", conditions),
                stack.outputs["HostedZoneId"], "")
    assert "route53:ChangeResourceRecordSets" in {c.action for c in calls}
