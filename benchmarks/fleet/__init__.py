"""Fleet simulation: H hosts running the agent's real planning code against a simulated,
rate-limited Route 53, in virtual time (see fleet.py for the workload, world.py for the clock,
the zone and the bookkeeping, route53.py for the model of the service and its sources,
host.py for the daemon, writer.py for the queued mode's zone writer Lambda, aws.py for the
AWS clients the real writer code is given, bridge.py for running that blocking code in
virtual time, retry.py for botocore).

Imports go one way: engine, route53, retry and bridge <- world and aws <- host and writer
<- fleet (tests/unit/test_fleet_sim.py checks that they form no cycle)."""

from benchmarks.fleet.fleet import FleetConfig, FleetResult, simulate
from benchmarks.fleet.host import AS_BUILT, FULL_LISTING, QUEUED, DaemonPolicy
from benchmarks.fleet.route53 import HISTORIC, Bucket, Limits
from benchmarks.fleet.writer import WriterConfig, WriterSummary

__all__ = ["AS_BUILT", "FULL_LISTING", "HISTORIC", "QUEUED", "Bucket", "DaemonPolicy", "FleetConfig",
           "FleetResult", "Limits", "WriterConfig", "WriterSummary", "simulate"]
