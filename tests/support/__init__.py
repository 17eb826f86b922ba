"""Test infrastructure for ecssd: real parts (a private Docker engine, offline images,
a moto server) started once per test session, plus environment hygiene.

Modules:
- env: the fake-AWS environment every test process and subprocess runs with.
- poll: the one polling helper (every wait has a deadline).
- bridge: a per-session Linux bridge + subnets, so several sessions never clash.
- dockerd: the ``docker_engine`` session fixture (private dockerd, or ECSSD_TEST_DOCKER_HOST).
- images: offline images (busybox, python) and container helpers.
- moto_server: the ``moto_server`` / ``aws`` fixtures (moto in server mode over HTTP).
- strict_route53, route53_quotas: moto's Route 53 refusing what Route 53 refuses, with its
  quotas and words (also used by the benchmarks' moto and the fleet model).
"""
