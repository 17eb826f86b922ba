"""The demo's AWS side, in a moto server on 127.0.0.1: a loopback "VPC", this host, the zone.

Why model the host in EC2 and ECS: the health sweep only trusts a host it can identify
with a live ECS container instance (see docs/sweep.md), and it probes services at
that instance's private IP. So this machine becomes EC2 instance ``ip-127-0-0-1`` (private
IP 127.0.0.1, where the demo publishes every container port), registered in the cluster
``ecssd-demo``; the agent runs with that host name; the private hosted zone belongs to the
loopback VPC. Everything the sweep probes then stays on 127.0.0.1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

AMI = "ami-12c6146b"  # any id: moto accepts it


@dataclass(frozen=True)
class World:
    vpc_id: str
    instance_id: str
    host_name: str  # the instance's private DNS name: ip-127-0-0-1.ec2.internal
    host_ip: str
    cluster: str
    zone_id: str
    domain: str


def create_world(client: Any, domain: str, cluster: str = "ecssd-demo",
                 host_ip: str = "127.0.0.1") -> World:
    """Create the VPC, the instance, the cluster and the private zone; ``client(service)``
    returns a boto3 client talking to the moto server."""
    ec2, ecs, route53 = client("ec2"), client("ecs"), client("route53")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    instance = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnet,
                                 PrivateIpAddress=host_ip)["Instances"][0]
    ecs.create_cluster(clusterName=cluster)
    ecs.register_container_instance(
        cluster=cluster,
        instanceIdentityDocument=json.dumps({"instanceId": instance["InstanceId"],
                                             "privateIp": host_ip}))
    zone = route53.create_hosted_zone(
        Name=domain, CallerReference=f"ecssd-demo-{vpc}",
        HostedZoneConfig={"PrivateZone": True, "Comment": "ecssd local demo"},
        VPC={"VPCRegion": ec2.meta.region_name, "VPCId": vpc})
    return World(vpc_id=vpc, instance_id=instance["InstanceId"],
                 host_name=instance["PrivateDnsName"], host_ip=host_ip, cluster=cluster,
                 zone_id=zone["HostedZone"]["Id"].rsplit("/", 1)[-1], domain=domain)
