"""The pure core: what a record is, who owns it, and how to get from the zone as it is to the
zone as it should be.

No I/O and no boto3, docker or requests import (tests/unit/test_layers.py checks it), so every
rule here is a table-driven unit test, and a dry run is the same code minus the applying.
"""
