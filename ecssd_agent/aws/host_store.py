"""DynamoDB: the table of host states of the queued mode (see :mod:`ecssd_agent.core.host_state`).

One item per host and kind: ``desired`` is written only by the host's agent (its whole
desired state, newest wins because one agent writes it in order), ``applied`` only by the
zone writer. The queue carries just "host X changed": whatever order or how many times the
hints arrive, the writer always plans from the newest desired state, so a redelivered or
late hint can never bring back an older one.

Record sets are stored in Route 53's own wire form (:func:`route53.to_wire`), so this module
knows DynamoDB's item format and nothing of record sets. Items expire (DynamoDB TTL on
``expires``) a week after their last write: a host that is gone leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from ecssd_agent.aws.route53 import from_wire, to_wire
from ecssd_agent.core.host_state import Applied, Published
from ecssd_agent.core.model import RecordSet

#: DynamoDB's limits: BatchGetItem reads 100 keys, BatchWriteItem writes 25 items per request.
GET_BATCH = 100
WRITE_BATCH = 25
EXPIRE_AFTER = 7 * 86400
#: The lease item's partition key: "~" cannot start a DNS label, so no host has it.
LEASE_HOST = "~writer"
#: Unprocessed keys/items (DynamoDB's partial answers under load) are retried this often.
MAX_ROUNDS = 8


class StoreError(RuntimeError):
    """DynamoDB left part of a batch unprocessed after every retry."""


def _records_out(records: Iterable[RecordSet]) -> str:
    return json.dumps([to_wire(r) for r in records], separators=(",", ":"), sort_keys=True)


def _records_in(text: str) -> tuple[RecordSet, ...]:
    return tuple(from_wire(w) for w in json.loads(text))


class HostStore:
    def __init__(self, client: Any, table: str, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.table = table
        self._clock = clock
        self._sleep = sleep

    # --- the agent's side ------------------------------------------------------------------

    def publish(self, pub: Published) -> None:
        """Store the host's desired state (one PutItem; newer than anything it stored before)."""
        self.client.put_item(TableName=self.table, Item={
            "host": {"S": pub.host}, "kind": {"S": "desired"}, "zone": {"S": pub.zone},
            "seq": {"N": str(pub.seq)}, "records": {"S": _records_out(pub.records)},
            "verify": {"BOOL": pub.verify}, "expires": {"N": str(self._expires())},
        })

    # --- the writer's side -----------------------------------------------------------------

    def load(self, hosts: Iterable[str]) -> tuple[dict[str, Published], dict[str, Applied]]:
        """The desired and applied state of each host (absent ones are missing)."""
        wanted = sorted(set(hosts))
        published: dict[str, Published] = {}
        applied: dict[str, Applied] = {}
        keys = [{"host": {"S": h}, "kind": {"S": k}} for h in wanted for k in ("desired", "applied")]
        for start in range(0, len(keys), GET_BATCH):
            for item in self._get(keys[start:start + GET_BATCH]):
                host = item["host"]["S"]
                records = _records_in(item["records"]["S"])
                if item["kind"]["S"] == "desired":
                    published[host] = Published(host, item["zone"]["S"], int(item["seq"]["N"]),
                                                records, bool(item.get("verify", {}).get("BOOL")))
                else:
                    applied[host] = Applied(host, int(item["seq"]["N"]), records,
                                            float(item["verified"]["N"]))
        return published, applied

    def save_applied(self, zone: str, states: Iterable[Applied]) -> int:
        """Store what the writer now knows each host owns; returns the requests it cost."""
        items = [{"PutRequest": {"Item": {
            "host": {"S": a.host}, "kind": {"S": "applied"}, "zone": {"S": zone},
            "seq": {"N": str(a.seq)}, "records": {"S": _records_out(a.records)},
            "verified": {"N": repr(a.verified)}, "expires": {"N": str(self._expires())},
        }}} for a in states]
        requests = 0
        for start in range(0, len(items), WRITE_BATCH):
            pending: list[Any] = items[start:start + WRITE_BATCH]
            for round_ in range(MAX_ROUNDS):
                answer = self.client.batch_write_item(RequestItems={self.table: pending})
                requests += 1
                pending = answer.get("UnprocessedItems", {}).get(self.table, [])
                if not pending:
                    break
                if round_ + 1 < MAX_ROUNDS:  # no wait after the last round: nothing follows
                    self._sleep(min(0.05 * 2 ** round_, 2.0))
            else:
                raise StoreError(f"DynamoDB left {len(pending)} applied state(s) unwritten")
        return requests

    # --- the writers' lease: one writer per table at a time ----------------------------------

    def acquire(self, owner: str, lease: float) -> bool:
        """Take the writers' lease for ``lease`` seconds; False if another holds it.

        Why: two writers planning the same host at once can apply an older publication over
        a newer one (the fleet simulation showed it). The lease is an item only a conditional
        write can take: free, expired, or already ours.
        """
        return self._put_lease(owner, lease, "attribute_not_exists(#h) OR #e < :now OR #o = :me")

    def extend(self, owner: str, lease: float) -> bool:
        """Extend the lease we hold; False if it is not ours any more OR has expired.

        Why not ``acquire``: a lease that expired, even if free again now, may have been
        taken, used and given back by another writer meanwhile; what we planned before may
        be older than what it applied, so we must stop rather than go on.
        """
        return self._put_lease(owner, lease, "#o = :me AND #e >= :now")

    def _put_lease(self, owner: str, lease: float, condition: str) -> bool:
        now = self._clock()
        names = {"#h": "host", "#e": "expires", "#o": "owner"}
        try:
            self.client.put_item(
                TableName=self.table,
                Item={"host": {"S": LEASE_HOST}, "kind": {"S": "lease"}, "owner": {"S": owner},
                      # whole seconds: the table's TTL attribute (it also removes a lease
                      # left by a writer that died)
                      "expires": {"N": str(math.ceil(now + lease))}},
                ConditionExpression=condition,
                ExpressionAttributeNames={k: v for k, v in names.items() if k in condition},
                ExpressionAttributeValues={":now": {"N": repr(now)}, ":me": {"S": owner}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release(self, owner: str) -> None:
        """Give the lease back (if still ours), so the next writer need not wait it out."""
        try:
            self.client.delete_item(
                TableName=self.table, Key={"host": {"S": LEASE_HOST}, "kind": {"S": "lease"}},
                ConditionExpression="#o = :me", ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": owner}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def _get(self, keys: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = []
        pending: Any = {self.table: {"Keys": keys, "ConsistentRead": True}}
        for round_ in range(MAX_ROUNDS):
            answer = self.client.batch_get_item(RequestItems=pending)
            found.extend(answer.get("Responses", {}).get(self.table, []))
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                return found
            if round_ + 1 < MAX_ROUNDS:
                self._sleep(min(0.05 * 2 ** round_, 2.0))
        raise StoreError("DynamoDB left host states unread after every retry")

    def _expires(self) -> int:
        return int(self._clock()) + EXPIRE_AFTER
