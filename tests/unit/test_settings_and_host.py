"""Settings (flags over ECSSD_ variables over defaults) and host identity (flags, else IMDSv2)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ecssd_agent.agent import cli
from ecssd_agent.agent.settings import SettingsError, load, parser
from ecssd_agent.aws.imds import Imds, MetadataUnavailable
from tests.support.imds import FakeImds


def test_defaults():
    s = load([], environ={})
    assert s.domain == "servicediscovery.internal"
    assert (s.routing, s.ttl, s.mode, s.resync) == ("weighted", 0, "daemon", 300.0)


def test_flags_win_over_environment_over_defaults():
    env = {"ECSSD_ROUTING": "multivalue", "ECSSD_TTL": "30", "ECSSD_DOMAIN": "env.internal",
           "ECSSD_SYNC": "true"}
    s = load([], environ=env)
    assert (s.routing, s.ttl, s.domain, s.mode) == ("multivalue", 30, "env.internal", "sync")
    s = load(["--ttl", "5", "--routing", "weighted", "cli.internal"], environ=env)
    assert (s.routing, s.ttl, s.domain) == ("weighted", 5, "cli.internal")


def test_reference_single_dash_spellings():
    s = load(["-sync", "-hostname", "ip-10-0-0-1"], environ={})
    assert s.mode == "sync" and s.hostname == "ip-10-0-0-1"
    assert load(["-remove"], environ={}).mode == "remove"


@pytest.mark.parametrize("argv,env,fragment", [
    ([], {"ECSSD_TTL": "soon"}, "ECSSD_TTL"),
    ([], {"ECSSD_SYNC": "maybe"}, "ECSSD_SYNC"),
    ([], {"ECSSD_ROUTING": "latency"}, "ECSSD_ROUTING"),
    (["--ttl", "-1"], {}, "--ttl"),
    (["--sync", "--remove"], {}, "exclude"),
])
def test_bad_settings_name_the_culprit(argv, env, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load(argv, environ=env)


def test_help_documents_every_option_and_its_variable():
    text = parser().format_help()
    for option in ("--hosted-zone-id", "--vpc-id", "--routing", "--ttl", "--sync", "--remove",
                   "--host-ip", "--log-format", "--resync", "--deregister-on-exit"):
        assert option in text
        assert "ECSSD_" + option[2:].upper().replace("-", "_") in text


@pytest.fixture
def imds(monkeypatch) -> Iterator[str]:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    fake = FakeImds()
    yield fake.url
    fake.close()


def test_imds_v2_reads_the_instance(imds):
    meta = Imds(imds).instance()
    assert (meta.hostname, meta.ip, meta.region, meta.instance_id) == (
        "ip-10-0-0-12.ec2.internal", "10.0.0.12", "eu-west-1", "i-0abc")


def test_host_from_imds_and_flags(imds, monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    host, region = cli.resolve_host(load(["--imds-endpoint", imds], environ={}))
    assert (host.label, host.ip, region) == ("ip-10-0-0-12", "10.0.0.12", "eu-west-1")
    host, _ = cli.resolve_host(load(["--imds-endpoint", imds, "--hostname", "web-1.corp"], environ={}))
    assert (host.label, host.ip) == ("web-1", "10.0.0.12")


def test_disabled_metadata_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(MetadataUnavailable):
        Imds("http://127.0.0.1:9").get("meta-data/local-ipv4")
    with pytest.raises(cli.StartupError, match="--hostname and --host-ip"):
        cli.resolve_host(load([], environ={}))


def test_unreachable_metadata_is_reported(monkeypatch):
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    with pytest.raises(MetadataUnavailable, match=r"127\.0\.0\.1:9"):
        Imds("http://127.0.0.1:9", timeout=0.5).get("meta-data/local-ipv4")


def test_cli_usage_error_exit_code(capsys):
    assert cli.main(["--ttl", "x"]) == 2
    assert "--ttl" in capsys.readouterr().err
