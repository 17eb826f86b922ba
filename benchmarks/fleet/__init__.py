"""Fleet simulation: H hosts running the agent's real planning code against a simulated,
rate-limited Route 53, in virtual time (see world.py for the workload, route53.py for the
model of the service and its sources, host.py for the daemon, retry.py for botocore)."""

from benchmarks.fleet.host import AS_BUILT, FULL_LISTING, QUEUED, DaemonPolicy
from benchmarks.fleet.route53 import HISTORIC, Bucket, Limits
from benchmarks.fleet.world import FleetConfig, FleetResult, simulate
from benchmarks.fleet.writer import WriterConfig, WriterSummary

__all__ = ["AS_BUILT", "FULL_LISTING", "HISTORIC", "QUEUED", "Bucket", "DaemonPolicy", "FleetConfig",
           "FleetResult", "Limits", "WriterConfig", "WriterSummary", "simulate"]
