"""The plan: from the record sets an owner has to the ones it should have, in fewest changes.

Pure, and the only diff of the system: the agent's direct mode and the task-events Lambda plan
with it through :func:`ecssd_agent.sync.reconcile.converge`, the zone writer per host through
:mod:`ecssd_agent.core.host_state`. Only record sets ``owns`` accepts are ever changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from ecssd_agent.core.model import Action, Change, RecordSet
from ecssd_agent.core.ownership import Owns


class ForeignRecord(ValueError):
    """A desired record set that the planning owner would not own: a bug in the caller."""


def plan(current: Iterable[RecordSet], desired: Iterable[RecordSet], owns: Owns, *,
         delete: bool = True) -> list[Change]:
    """Changes that turn the owned part of ``current`` into ``desired``.

    ``current`` may hold the whole zone: record sets ``owns`` rejects are ignored, never
    changed. Deletes come first, then upserts, then creates, so a batch never collides with
    a record set it is replacing. A record set whose routing policy changes is deleted and
    created again (Route 53 cannot UPSERT across policies). Running plan on its own result
    gives no change.

    ``delete=False`` adds and corrects, never removes: an owned record set that is not
    desired is left alone (a replacement across routing policies still deletes the old one).
    """
    have = {r.key: r for r in current if owns(r)}
    want: dict[tuple[str, str, str | None], RecordSet] = {}
    for record in desired:
        if not owns(record):
            raise ForeignRecord(f"refusing to plan a record set we would not own: {record}")
        want[record.key] = record

    deletes: list[Change] = []
    upserts: list[Change] = []
    creates: list[Change] = []
    for key, old in have.items():
        new = want.get(key)
        if new is None:
            if delete:
                deletes.append(Change(Action.DELETE, old))
        elif new != old:
            if new.routing != old.routing or old.alias:
                deletes.append(Change(Action.DELETE, old))
                creates.append(Change(Action.CREATE, new))
            else:
                upserts.append(Change(Action.UPSERT, new))
    creates.extend(Change(Action.CREATE, r) for k, r in want.items() if k not in have)
    # Sorted within each action: plans are deterministic, so tests and logs can compare them.
    return [*sorted(deletes, key=_sort_key), *sorted(upserts, key=_sort_key),
            *sorted(creates, key=_sort_key)]


def _sort_key(change: Change) -> tuple[str, str, str]:
    record = change.record
    return (record.name, record.type, record.set_identifier or "")
