"""The server's copy of the zone: record sets by name, kept from paced listings and lookups.

Two kinds of reads feed it (:mod:`.refresh` decides which, one request at a time):

- a **sweep**: the whole zone, page after page, spread over many seconds;
- a **lookup**: one page listed from a name someone asked for and the view lacks.

Only what Route 53 documents about a listing is relied on: record sets come sorted by name
(so one name's record sets are consecutive), and a listing started at a name begins with
that name's record sets when it has any. The name order itself is not relied on (moto
orders names containing ``-`` otherwise than Route 53 does). Hence:

- a run of one name's record sets followed, in the same page, by another name (or by the
  end of the zone) is that name's whole truth: it replaces the copy's record sets of that
  name at once, whichever read it came from; the latest read wins;
- a lookup whose page does not begin with the name proves that the name has no record sets;
- a name is removed otherwise only at the end of a sweep that did not see it, unless a
  lookup found it after that sweep began (the sweep's page may have passed before the name
  was created).

Until the first sweep is complete the copy is not :attr:`complete` and no view is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ecssd_agent.aws.route53 import Page
from ecssd_agent.core.model import RecordSet

Run = tuple[str, tuple[RecordSet, ...]]


def runs(records: Iterable[RecordSet]) -> list[Run]:
    """Consecutive record sets of one name, in listing order."""
    out: list[Run] = []
    name: str | None = None
    current: list[RecordSet] = []
    for record in records:
        if record.name != name:
            if name is not None:
                out.append((name, tuple(current)))
            name, current = record.name, []
        current.append(record)
    if name is not None:
        out.append((name, tuple(current)))
    return out


def open_run(page: Page, found: Sequence[Run]) -> bool:
    """Whether the page's last run may go on in the next page (its name is where it starts)."""
    return bool(found) and page.next is not None and page.next.record_name() == found[-1][0]


def _merged(first: Iterable[RecordSet], then: Iterable[RecordSet]) -> tuple[RecordSet, ...]:
    """Record sets of one name from two consecutive pages; a record set listed twice (a
    server that restarts a page at the name and type) counts once."""
    out = {r.key: r for r in first}
    for record in then:
        out.setdefault(record.key, record)
    return tuple(out.values())


def _key(record: RecordSet) -> tuple[str, str, str]:
    return (record.name, record.type, record.set_identifier or "")


class ZoneCopy:
    """Record sets by name; see the module docstring. Used by one thread (the refresher)."""

    def __init__(self) -> None:
        self._names: dict[str, tuple[RecordSet, ...]] = {}
        self.complete = False
        self.changes = 0  # bumped by every change: the view is rebuilt when it moved
        self._seen: set[str] | None = None  # names the sweep in progress has seen
        self._found: set[str] = set()  # names a lookup found since that sweep began
        self._carry: Run | None = None  # the last run of the sweep's previous page

    def __len__(self) -> int:
        return sum(len(records) for records in self._names.values())

    def records(self) -> list[RecordSet]:
        """Every record set, in a stable order (two equal copies list equally)."""
        return sorted((r for records in self._names.values() for r in records), key=_key)

    def names(self, name: str) -> tuple[RecordSet, ...]:
        return self._names.get(name, ())

    # --- sweeps --------------------------------------------------------------------------

    @property
    def sweeping(self) -> bool:
        return self._seen is not None

    def start_sweep(self) -> None:
        self._seen = set()
        self._found = set()
        self._carry = None

    def sweep_page(self, page: Page) -> None:
        """Apply one page of the sweep in progress."""
        assert self._seen is not None, "no sweep in progress"
        found = runs(page.records)
        if self._carry is not None:
            name, records = self._carry
            self._carry = None
            if found and found[0][0] == name:
                found[0] = (name, _merged(records, found[0][1]))
            else:
                found.insert(0, (name, records))
        if open_run(page, found):
            self._carry = found.pop()
        for name, records in found:
            self._seen.add(name)
            self._set(name, records)

    def end_sweep(self) -> None:
        """The sweep listed its last page: names it did not see are gone."""
        assert self._seen is not None, "no sweep in progress"
        if self._carry is not None:  # cannot happen with a last page; keep what was read
            name, records = self._carry
            self._seen.add(name)
            self._set(name, records)
        keep = self._seen | self._found
        for name in [n for n in self._names if n not in keep]:
            self._set(name, ())
        self._seen = None
        self._carry = None
        self.complete = True

    def abandon_sweep(self) -> None:
        """Forget the sweep in progress (its pages stay applied; nothing is removed)."""
        self._seen = None
        self._carry = None

    # --- lookups -------------------------------------------------------------------------

    def lookup(self, name: str, pages: Sequence[Page]) -> None:
        """Apply a lookup of ``name``: pages listed from it, the last one ending past its
        record sets (or the zone). Other names seen whole in passing are applied too."""
        found: list[Run] = []
        for page in pages:
            more = runs(page.records)
            if found and more and more[0][0] == found[-1][0]:
                found[-1] = (found[-1][0], _merged(found[-1][1], more.pop(0)[1]))
            found.extend(more)
        cut = found.pop()[0] if open_run(pages[-1], found) else None  # not known whole
        if cut != name and (not found or found[0][0] != name):
            found.insert(0, (name, ()))  # the listing began past it: it has no record sets
        for run_name, records in found:
            if records:
                self._found.add(run_name)
            self._set(run_name, records)

    def lookup_done(self, name: str, page: Page) -> bool:
        """Whether a lookup of ``name`` that listed up to ``page`` has seen it whole."""
        return page.next is None or page.next.record_name() != name

    # --- the one way records change -----------------------------------------------------

    def _set(self, name: str, records: tuple[RecordSet, ...]) -> None:
        ordered = tuple(sorted(records, key=_key))
        if self._names.get(name, ()) == ordered:
            return
        if ordered:
            self._names[name] = ordered
        else:
            del self._names[name]
        self.changes += 1
