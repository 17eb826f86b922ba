"""Example microservices (time, calc, portal) and the one-command local demo.

The services use only the standard library (plus, for the portal, ecssd's DNS client and
dnspython) so that they run in a bare ``python3`` image with nothing pip-installed.
"""
