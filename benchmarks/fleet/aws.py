"""The AWS clients the queued mode's real code is given in the simulation: Route 53 (through
the botocore retry model to the simulated Route 53), DynamoDB (the host-state table, held in
memory, behind the REAL :class:`~ecssd_agent.aws.host_store.HostStore`) and SQS (the hint
queue, behind the REAL :class:`~ecssd_agent.aws.change_queue.ChangeQueue`).

Each answers as the service does for the requests that code makes, in the wire format it
sends and reads, so no part of the store, the queue or the writer is re-implemented here. A
writer invocation's requests take virtual time through its :class:`~benchmarks.fleet.bridge.Link`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from benchmarks.fleet.bridge import Link
from benchmarks.fleet.engine import Call, Instruction
from benchmarks.fleet.retry import BotocoreClient
from benchmarks.fleet.route53 import CHANGE, GET_ZONE, LIST, Response
from ecssd_agent.aws.host_store import LEASE_HOST
from ecssd_agent.aws.route53 import from_wire
from ecssd_agent.core.model import Action, Change

ItemKey = tuple[str, str]  # the table's key: (host, kind)
LEASE_KEY: ItemKey = (LEASE_HOST, "lease")  # HostStore.acquire's item


class SimRoute53Client:
    """The boto3 Route 53 client of a writer's Lambda instance: every request goes through
    botocore's standard retry model (``retry``, this instance's own retry quota) to the
    simulated Route 53; errors come back as botocore ``ClientError``\\ s. ``on_change`` is
    told of every change attempt as it is sent (the lease check)."""

    def __init__(self, retry: BotocoreClient, link: Link,
                 on_change: Callable[[], None] | None = None) -> None:
        self.retry = retry
        self.link = link
        self.on_change = on_change
        self.requests: Counter[str] = Counter()  # operation -> calls (after retries)

    def _call(self, op: str, params: dict[str, Any]) -> Any:
        response: Response = self.link.run(lambda: self._watched(self.retry.call(op, params)))
        self.requests[op] += 1
        if not response.ok:
            message = response.data if isinstance(response.data, str) else response.error
            raise ClientError({"Error": {"Code": response.error or "", "Message": message or ""}},
                              op)
        return response.data

    def _watched(self, work: Generator[Instruction, Any, Response]
                 ) -> Generator[Instruction, Any, Response]:
        value: Any = None
        while True:
            try:
                instruction = work.send(value)
            except StopIteration as stop:
                response: Response = stop.value
                return response
            if isinstance(instruction, Call) and instruction.op == CHANGE and self.on_change:
                self.on_change()
            value = yield instruction

    def get_hosted_zone(self, Id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._call(GET_ZONE, {})
        return data

    def change_resource_record_sets(self, HostedZoneId: str,
                                    ChangeBatch: Mapping[str, Any]) -> dict[str, Any]:
        changes = [Change(Action(c["Action"]), from_wire(c["ResourceRecordSet"]))
                   for c in ChangeBatch["Changes"]]
        data = self._call(CHANGE, {"changes": changes})
        return {"ChangeInfo": {"Status": "PENDING", "InsyncAt": data["insync"]}}

    def get_paginator(self, operation: str) -> SimListPaginator:
        if operation != "list_resource_record_sets":
            raise ValueError(f"no simulated paginator for {operation}")
        return SimListPaginator(self)


class SimListPaginator:
    """boto3's ``list_resource_record_sets`` paginator: pages on demand, each one request."""

    def __init__(self, client: SimRoute53Client) -> None:
        self.client = client

    def paginate(self, HostedZoneId: str, StartRecordName: str | None = None,
                 PaginationConfig: Mapping[str, Any] | None = None
                 ) -> Iterator[dict[str, Any]]:
        size = int((PaginationConfig or {}).get("PageSize", 300))
        params: dict[str, Any] = {"max_items": size}
        if StartRecordName:
            params["start_name"] = StartRecordName
        while True:
            page: dict[str, Any] = self.client._call(LIST, dict(params))
            yield page
            if not page["IsTruncated"]:
                return
            params = {"start_name": page["NextRecordName"], "start_type": page["NextRecordType"],
                      "start_identifier": page.get("NextRecordIdentifier"), "max_items": size}


# DynamoDB's condition expressions, the part HostStore's lease uses: terms joined by OR, each
# attribute_exists(x), attribute_not_exists(x) or a comparison of two operands.
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b), "<>": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b), "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b), ">=": lambda a, b: bool(a >= b)}


def _typed(value: Mapping[str, str]) -> tuple[str, Any]:
    ((kind, raw),) = value.items()
    if kind == "N":
        return kind, float(raw)
    if kind == "S":
        return kind, raw
    raise ValueError(f"attribute type {kind} is not simulated")


def condition_holds(expression: str, item: Mapping[str, Mapping[str, str]] | None,
                    names: Mapping[str, str], values: Mapping[str, Mapping[str, str]]) -> bool:
    """Evaluate ``expression`` on ``item`` (None: no item) as DynamoDB does; raises
    ValueError on syntax this model does not know (so a changed expression fails loudly
    instead of being misread)."""
    if "(" in expression.replace("attribute_not_exists(", "").replace("attribute_exists(", ""):
        raise ValueError(f"condition {expression!r}: parentheses are not simulated")

    def attribute(token: str) -> str:
        return names[token] if token.startswith("#") else token

    def operand(token: str) -> tuple[str, Any] | None:
        if token.startswith(":"):
            return _typed(values[token])
        stored = (item or {}).get(attribute(token))
        return _typed(stored) if stored is not None else None

    def holds(atom: str) -> bool:
        for function, exists in (("attribute_not_exists(", False), ("attribute_exists(", True)):
            if atom.startswith(function) and atom.endswith(")"):
                name = attribute(atom[len(function):-1].strip())
                return (item is not None and name in item) == exists
        parts = atom.split()
        if len(parts) != 3 or parts[1] not in _COMPARE:
            raise ValueError(f"condition term {atom!r} is not simulated")
        left, right = operand(parts[0]), operand(parts[2])
        return (left is not None and right is not None and left[0] == right[0]
                and bool(_COMPARE[parts[1]](left[1], right[1])))

    # OR of ANDs, AND binding tighter, as DynamoDB reads it
    return any(all(holds(atom.strip()) for atom in term.split(" AND "))
               for term in expression.split(" OR "))


def _conditional_failure(op: str) -> ClientError:
    return ClientError({"Error": {"Code": "ConditionalCheckFailedException",
                                  "Message": "The conditional request failed"}}, op)


class SimDynamoDB:
    """The DynamoDB client of the real :class:`HostStore`, on one table held in memory
    (``items``, by (host, kind), shared by every client of the table).

    PutItem and DeleteItem with a condition (the writers' lease): as DynamoDB, the condition
    is evaluated on the item as stored and the write is atomic with it; a failed condition
    raises ConditionalCheckFailedException. BatchGetItem and BatchWriteItem (the host states):
    every key and item is processed (DynamoDB does not throttle here, so nothing is left
    unprocessed). A request takes effect when it is sent and then costs ``latency`` of virtual
    time when a writer invocation makes it (``link``); an agent's costs nothing here (its host
    models the publication's delay). ``owners`` remembers whom this client's writes named
    (the lease check asks whose writer this is)."""

    def __init__(self, items: dict[ItemKey, dict[str, Any]], clock: Callable[[], float],
                 link: Link | None = None, latency: float = 0.0) -> None:
        self.items = items
        self._clock = clock
        self.link = link
        self.latency = latency
        self.owners: set[str] = set()
        self.requests: Counter[str] = Counter()
        #: keys asked (BatchGetItem) and items written (BatchWriteItem): DynamoDB bills items
        self.request_items: Counter[str] = Counter()
        #: when each PutItem was sent (this client's clock): an agent's are its publications
        self.put_at: list[float] = []

    def _send(self, op: str, items: int = 0) -> None:
        if self.link is not None:
            self.link.check()
        self.requests[op] += 1
        if items:
            self.request_items[op] += items

    def _wait(self) -> None:
        if self.link is not None:
            self.link.pause(self.latency)

    def put_item(self, TableName: str, Item: Mapping[str, Any], ConditionExpression: str = "",
                 ExpressionAttributeNames: Mapping[str, str] | None = None,
                 ExpressionAttributeValues: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._send("PutItem")
        self.put_at.append(self._clock())
        key = _key(Item)
        ok = not ConditionExpression or condition_holds(
            ConditionExpression, self.items.get(key), ExpressionAttributeNames or {},
            ExpressionAttributeValues or {})
        if ok:
            self.items[key] = dict(Item)
            if "owner" in Item:
                self.owners.add(Item["owner"]["S"])
        self._wait()
        if not ok:
            raise _conditional_failure("PutItem")
        return {}

    def delete_item(self, TableName: str, Key: Mapping[str, Any], ConditionExpression: str = "",
                    ExpressionAttributeNames: Mapping[str, str] | None = None,
                    ExpressionAttributeValues: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._send("DeleteItem")
        key = _key(Key)
        # DynamoDB evaluates a condition on a missing item as on an item without attributes
        ok = not ConditionExpression or condition_holds(
            ConditionExpression, self.items.get(key), ExpressionAttributeNames or {},
            ExpressionAttributeValues or {})
        if ok:
            self.items.pop(key, None)
        self._wait()
        if not ok:
            raise _conditional_failure("DeleteItem")
        return {}

    def batch_get_item(self, RequestItems: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        ((table, request),) = RequestItems.items()
        keys: Sequence[Mapping[str, Any]] = request["Keys"]
        self._send("BatchGetItem", len(keys))
        found = [self.items[key] for key in map(_key, keys) if key in self.items]
        self._wait()
        return {"Responses": {table: found}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: Mapping[str, Sequence[Mapping[str, Any]]]
                         ) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        self._send("BatchWriteItem", len(requests))
        for request in requests:
            if "PutRequest" not in request:
                raise ValueError(f"{table}: only PutRequest is simulated, not {sorted(request)}")
            item = request["PutRequest"]["Item"]
            self.items[_key(item)] = dict(item)
        self._wait()
        return {"UnprocessedItems": {}}


def _key(item: Mapping[str, Any]) -> ItemKey:
    return item["host"]["S"], item["kind"]["S"]


class SimSQS:
    """The SQS client of :class:`ChangeQueue`: the agents' SendMessage (its delay is the
    host's publication latency) and the writer's SendMessageBatch (a hand-back), whose
    messages are visible at once. ``enqueue`` puts a body on the queue and returns its
    message id; ``on_batch`` is told how many messages each SendMessageBatch carried."""

    def __init__(self, enqueue: Callable[[str], str], clock: Callable[[], float],
                 link: Link | None = None, latency: float = 0.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._enqueue = enqueue
        self._clock = clock
        self.link = link
        self.latency = latency
        self._on_batch = on_batch
        self.requests: Counter[str] = Counter()
        self.messages = 0
        #: when each SendMessage was sent (this client's clock, as SimDynamoDB.put_at)
        self.sent_at: list[float] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        self.requests["SendMessage"] += 1
        self.messages += 1
        self.sent_at.append(self._clock())
        return {"MessageId": self._enqueue(MessageBody)}

    def send_message_batch(self, QueueUrl: str, Entries: list[Mapping[str, str]]
                           ) -> dict[str, Any]:
        if len(Entries) > 10:
            raise ValueError("SendMessageBatch takes at most 10 entries")
        if self.link is not None:
            self.link.check()
        self.requests["SendMessageBatch"] += 1
        self.messages += len(Entries)
        successful = [{"Id": e["Id"], "MessageId": self._enqueue(e["MessageBody"])}
                      for e in Entries]
        if self._on_batch is not None:
            self._on_batch(len(Entries))
        if self.link is not None:
            self.link.pause(self.latency)
        return {"Successful": successful, "Failed": []}
