"""Names in the zone: record names, host labels, the parts of ECS ARNs."""

from __future__ import annotations

import pytest

from ecssd_agent.core import naming


@pytest.mark.parametrize("relative,zone,expected", [
    ("calc", "servicediscovery.internal.", "calc.servicediscovery.internal."),
    ("_calc._tcp", "servicediscovery.internal.", "_calc._tcp.servicediscovery.internal."),
    ("CALC", "sd.internal.", "calc.sd.internal."),
    ("calc.sd.internal", "sd.internal.", "calc.sd.internal."),
    ("calc.sd.internal.", "sd.internal.", "calc.sd.internal."),
])
def test_record_name(relative, zone, expected):
    assert naming.record_name(relative, zone) == expected


@pytest.mark.parametrize("relative,zone,fragment", [
    ("calc.other.", "sd.internal.", "not in the zone"),
    ("sd.internal", "sd.internal.", "apex"),
    ("a" * 64, "sd.internal.", "invalid label"),
    ("a..b", "sd.internal.", "invalid label"),
    ("-a", "sd.internal.", "invalid label"),
    (".".join(["a" * 60] * 4), "sd.internal.", "longer than 253"),
])
def test_record_name_rejects(relative, zone, fragment):
    with pytest.raises(naming.InvalidName, match=fragment):
        naming.record_name(relative, zone)


def test_host_label_and_ids():
    assert naming.host_label("ip-10-0-0-12.ec2.internal") == "ip-10-0-0-12"
    assert naming.host_label("MyHost") == "myhost"
    with pytest.raises(naming.InvalidName):
        naming.host_label("_bad.example")
    assert naming.task_id("arn:aws:ecs:us-east-1:1:task/prod/abc") == "abc"
    assert naming.task_id("arn:aws:ecs:us-east-1:1:task/abc") == "abc"
    assert naming.cluster_name("arn:aws:ecs:us-east-1:1:cluster/prod") == "prod"
    assert naming.cluster_name("prod") == "prod"
