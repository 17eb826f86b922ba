"""The health sweep's decisions, pure: what ECS and EC2 show + the owned records -> actions.

Two kinds of decision, kept apart. Evidence: record sets whose host or task ECS and EC2 show
gone (orphans) are deleted without a probe, unless the delete-fraction guard refuses them.
Verdicts: which instances to probe, at what address and how, and, with the probe verdicts,
which live instances lose their records and tasks; a verdict is acted on only when the path
to the instance is shown to work and the instance failed ``CHECK_FAILURES`` sweeps in a row.
An observation that failed decides nothing. The rules, and why, are docs/sweep.md.
"""


from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ecssd_agent.core import ownership
from ecssd_agent.core.ecs_task import RUNNING
from ecssd_agent.core.metadata import Check, Declaration
from ecssd_agent.core.model import RecordSet
from ecssd_agent.core.ownership import Kind, Owner
from ecssd_agent.core.records import parse_srv
from ecssd_agent.sweep.evidence import (
    Doubt,
    TaskEvidence,
    backing,
    check_path,
    ecs_vouches,
    failure_tag,
    failures,
    grace_seconds,
)

#: A plan deleting this many orphaned record sets or fewer is never refused by the
#: delete-fraction guard: in a small cluster one gone task is already a large fraction.
DELETE_FLOOR = 2

# --- what was observed -------------------------------------------------------------------

@dataclass(frozen=True)
class HostView:
    """A container instance and its EC2 instance, as the sweep needs it."""

    instance_arn: str
    instance_id: str
    label: str  # first label of the private DNS name ("" if EC2 did not say)
    ip: str  # private IP ("" if EC2 did not say)
    live: bool
    state: str = ""  # EC2 state, for reports


@dataclass(frozen=True)
class ClusterView:
    """One swept cluster. ``error`` set: the observation failed and decides nothing."""

    name: str
    hosts: tuple[HostView, ...] = ()
    tasks: Mapping[str, TaskEvidence] = field(default_factory=dict)  # described, by task id
    gone_tasks: frozenset[str] = frozenset()  # ids ECS says it does not know
    running: int = 0  # tasks listed with desiredStatus RUNNING
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Scope:
    """Every swept cluster. ``all_clusters``: they are all the account has (ECS_CLUSTERS empty)."""

    clusters: tuple[ClusterView, ...]
    all_clusters: bool
    error: str = ""  # the clusters themselves could not be listed: nothing is judged

    def view(self, cluster_field: str) -> ClusterView | None:
        return next((c for c in self.clusters if ownership.cluster_matches(cluster_field, c.name)),
                    None)

    @property
    def failed(self) -> list[ClusterView]:
        return [c for c in self.clusters if not c.ok]


@dataclass(frozen=True)
class Rules:
    default_path: str = "/health"
    grace_seconds: float = 60.0
    check_health: bool = True
    stop_unhealthy: bool = True
    max_delete_fraction: float = 0.5
    check_failures: int = 2  # sweeps in a row an instance fails before it is acted on


# --- what was decided --------------------------------------------------------------------

@dataclass(frozen=True)
class Deletion:
    record: RecordSet
    reason: str


@dataclass(frozen=True)
class Skip:
    what: str  # a SetIdentifier
    reason: str
    task: str = ""  # "<cluster>/<task id>" when the record names an ECS task


@dataclass(frozen=True)
class Target:
    """One service instance to check, how, and the record sets it answers for."""

    key: str  # the owner's SetIdentifier
    ip: str
    port: int
    path: str  # the HTTP path ("" for a TCP check)
    cluster: str = ""  # the swept cluster's name, when the instance is an ECS task
    task: str = ""  # task id ("" when not an ECS task: nothing to stop)
    records: tuple[RecordSet, ...] = ()
    ecs_healthy: str = ""  # why ECS vouches for it (its own healthCheck passes): not judged
    check: Check = Check.HTTP  # Check.HTTP or Check.TCP (Check.NONE is never a target)
    task_arn: str = ""  # where its failures in a row are kept (a tag of the task)
    failures: int = 0  # sweeps in a row it failed before this one (the task's tag)

    @property
    def url(self) -> str:
        if self.check is Check.TCP:
            return f"tcp://{self.ip}:{self.port}"
        return f"http://{self.ip}:{self.port}{self.path}"

    @property
    def task_ref(self) -> str:
        return f"{self.cluster}/{self.task}" if self.task else ""


@dataclass(frozen=True)
class Verdict:
    """A probe's outcome: ``detail`` is the HTTP status or the error, for the StopTask reason.

    ``reached``: the target's host answered at the TCP level, with a connection or a reset
    (security groups and NACLs drop, they never reset): the network path to that address
    works, whatever the service said. A connect timeout or an unreachable network is no such
    answer. ``judged`` False: the probe itself failed on this instance (its configuration or
    its answer broke the check), which is no verdict at all.
    """

    healthy: bool
    detail: str
    reached: bool = True
    judged: bool = True


@dataclass
class Assessment:
    owned: int = 0
    orphans: list[Deletion] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    kept: int = 0  # record sets of live owners not probed (A records, UDP, no port)
    # Keys of service record sets of owners ECS/EC2 show alive, not probed (kept, waiting):
    # with the orphans and the probed instances' records, what this run decides on evidence.
    alive: set[tuple[str, str, str | None]] = field(default_factory=set)
    skipped: list[Skip] = field(default_factory=list)  # judgement withheld
    no_verdict: list[Skip] = field(default_factory=list)  # of those: a service's own error
    suspect: list[Skip] = field(default_factory=list)  # a port ECS says the task does not have
    out_of_scope: int = 0  # record sets of clusters or hosts this sweep does not cover
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stop:
    cluster: str
    task: str
    reason: str


@dataclass(frozen=True)
class TagChange:
    """The failure counts to write on one task: tags to set and tag keys to remove."""

    cluster: str
    task_arn: str
    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failing:
    """A failed instance not acted on this run: counted (``held`` empty) or held back."""

    target: Target
    verdict: Verdict
    failures: int  # sweeps in a row it has failed, this one included (when counted)
    held: str = ""  # why its verdict counts for nothing this run (the path looks broken)


@dataclass
class Plan:
    deletions: list[Deletion] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    healthy: list[Target] = field(default_factory=list)
    unhealthy: list[tuple[Target, Verdict]] = field(default_factory=list)  # acted on
    failing: list[Failing] = field(default_factory=list)  # counted, not yet acted on
    held: list[Failing] = field(default_factory=list)  # failed where the path looks broken
    unjudged: list[Target] = field(default_factory=list)  # probed without a result (deadline)
    no_verdict: list[tuple[Target, str]] = field(default_factory=list)  # the probe itself failed
    ecs_healthy: list[tuple[Target, Verdict]] = field(default_factory=list)  # failed, ECS vouches
    tags: list[TagChange] = field(default_factory=list)
    refused: str = ""  # why the orphans are not deleted (the delete-fraction guard)
    refused_by: str = ""  # "delete_fraction" when refused
    held_back: str = ""  # why verdicts were held back this run ("" when none was)
    guard: GuardFigures = field(default_factory=lambda: GuardFigures())


@dataclass
class GuardFigures:
    """What the guards measured, for the summary and the metric line."""

    deletable: int = 0  # record sets decided on evidence (see _delete_fraction)
    planned: int = 0  # orphaned record sets the plan deletes (before the guard)
    probed: int = 0  # instances with a verdict
    failed: int = 0  # of which not healthy
    unreachable: list[str] = field(default_factory=list)  # addresses nothing answered at
    fail_open: bool = False  # every probed instance failed: no verdict acted on


# --- pure helpers ------------------------------------------------------------------------

def referenced_tasks(records: Iterable[RecordSet], clusters: Sequence[str]) -> dict[str, set[str]]:
    """Task ids the owned records name, per swept cluster name: what DescribeTasks must cover."""
    out: dict[str, set[str]] = {name: set() for name in clusters}
    for record in records:
        owner = ownership.parse_set_identifier(record.set_identifier)
        if owner is None or not owner.task or not owner.cluster:
            continue
        for name in clusters:
            if ownership.cluster_matches(owner.cluster, name):
                out[name].add(owner.task)
                break
    return out


# --- assess: records + observation -> orphans and probe targets --------------------------

@dataclass
class _Owned:
    owner: Owner
    records: list[RecordSet]
    # What an unhealthy verdict deletes: the owner's records, or for a task-events record
    # every record of its task (its A records would keep routing to it otherwise).
    task_records: list[RecordSet] = field(default_factory=list)


class _Hosts:
    """Host identification over every swept cluster, indexed once (a zone may hold thousands
    of hosts' records)."""

    def __init__(self, scope: Scope, host_ips: Mapping[str, set[str]]) -> None:
        self.host_ips = host_ips
        self._live_by_label: dict[str, tuple[ClusterView, HostView]] = {}
        self._live_by_ip: dict[str, tuple[ClusterView, HostView]] = {}
        self._failed_by_label: dict[str, ClusterView] = {}
        self._failed_by_ip: dict[str, ClusterView] = {}
        self._by_arn: dict[str, HostView] = {}
        for cluster in scope.clusters:
            for host in cluster.hosts:
                self._by_arn[host.instance_arn] = host
                if cluster.ok and host.live:
                    if host.label:
                        self._live_by_label.setdefault(host.label, (cluster, host))
                    self._live_by_ip.setdefault(host.ip, (cluster, host))
                elif not cluster.ok:
                    if host.label:
                        self._failed_by_label.setdefault(host.label, cluster)
                    if host.ip:
                        self._failed_by_ip.setdefault(host.ip, cluster)

    def live(self, label: str) -> tuple[ClusterView, HostView] | None:
        """The live container instance ``label`` is, searching by name first, then by IP."""
        found = self._live_by_label.get(label)
        if found is None:
            found = next((self._live_by_ip[ip] for ip in sorted(self.host_ips.get(label, ()))
                          if ip in self._live_by_ip), None)
        return found

    def instance(self, container_instance_arn: str) -> HostView | None:
        return self._by_arn.get(container_instance_arn) if container_instance_arn else None

    def in_failed(self, label: str) -> ClusterView | None:
        found = self._failed_by_label.get(label)
        if found is None:
            found = next((self._failed_by_ip[ip] for ip in sorted(self.host_ips.get(label, ()))
                          if ip in self._failed_by_ip), None)
        return found


def assess(scope: Scope, records: Iterable[RecordSet], rules: Rules, now: float) -> Assessment:
    """Sort every owned record set into: delete (orphan), probe, keep, skip or out of scope."""
    result = Assessment()
    owners: dict[str, _Owned] = {}
    for record in records:
        owner = ownership.parse_set_identifier(record.set_identifier)
        if owner is None:
            continue
        result.owned += 1
        assert record.set_identifier is not None  # parse_set_identifier checked it
        owners.setdefault(record.set_identifier, _Owned(owner, [])).records.append(record)
    if scope.error:
        result.errors.append(scope.error)
        result.skipped.extend(Skip(key, scope.error) for key in owners)
        return result
    result.errors.extend(f"cluster {c.name}: {c.error}" for c in scope.failed)

    by_task: dict[tuple[str, str], list[RecordSet]] = defaultdict(list)
    for owned in owners.values():
        if owned.owner.kind is Kind.TASK:
            by_task[(owned.owner.cluster, owned.owner.task)].extend(owned.records)
    for owned in owners.values():
        if owned.owner.kind is Kind.TASK:
            owned.task_records = by_task[(owned.owner.cluster, owned.owner.task)]

    host_ips: dict[str, set[str]] = defaultdict(set)
    by_host: dict[str, list[str]] = defaultdict(list)  # host label -> its service owners' keys
    for key, owned in owners.items():
        if owned.owner.kind is not Kind.HOST:
            continue
        if owned.owner.is_host_record:
            for record in owned.records:
                if record.type == "A":
                    host_ips[owned.owner.host].update(record.values)
        else:
            by_host[owned.owner.host].append(key)
    hosts = _Hosts(scope, host_ips)

    deleted: set[str] = set()
    for key, owned in sorted(owners.items()):
        owner = owned.owner
        if owner.kind is Kind.HOST and owner.is_host_record:
            continue  # decided below, once its host's service records are
        outcome = _service(key, owned, scope, hosts, rules, now)
        _record(result, key, owned, outcome)
        if isinstance(outcome, str):
            deleted.add(key)

    for key, owned in sorted(owners.items()):
        owner = owned.owner
        if owner.kind is Kind.HOST and owner.is_host_record:
            outcome = _host_record(owner.host, by_host.get(owner.host, []), deleted, scope,
                                   hosts)
            _record(result, key, owned, outcome)
    return result


# An outcome: a str is a deletion reason; a Target is a probe; these classes the rest.
class _Keep:
    pass


class _Out:
    pass


@dataclass(frozen=True)
class _Skip:
    reason: str


@dataclass(frozen=True)
class _Wait(_Skip):
    """Skipped, but of an instance ECS shows alive: its records count as deletable."""


@dataclass(frozen=True)
class _NoVerdict(_Wait):
    """A live instance its own declaration keeps from being checked: reported with its task."""

    task: str = ""


@dataclass(frozen=True)
class _Suspect:
    reason: str


_Outcome = str | Target | _Keep | _Out | _Skip | _Suspect
KEEP = _Keep()
OUT = _Out()


def _record(result: Assessment, key: str, owned: _Owned, outcome: _Outcome) -> None:
    if isinstance(outcome, str):
        result.orphans.extend(Deletion(r, outcome) for r in owned.records)
    elif isinstance(outcome, Target):
        result.targets.append(outcome)
    elif isinstance(outcome, _Skip):
        result.skipped.append(Skip(key, outcome.reason))
        if isinstance(outcome, _NoVerdict):
            result.no_verdict.append(Skip(key, outcome.reason, outcome.task))
        if isinstance(outcome, _Wait):
            result.alive.update(r.key for r in owned.records)
    elif isinstance(outcome, _Suspect):
        result.suspect.append(Skip(key, outcome.reason))
    elif isinstance(outcome, _Out):
        result.out_of_scope += len(owned.records)
    else:
        result.kept += len(owned.records)
        result.alive.update(r.key for r in owned.records)


def _host_verdict(label: str, scope: Scope, hosts: _Hosts) -> _Outcome:
    """Alive (a Target-less KEEP with the host found), dead (a reason), skip or out of scope."""
    failed = hosts.in_failed(label)
    if failed is not None:
        return _Skip(f"host {label} is in cluster {failed.name}, whose observation failed")
    if scope.failed:
        names = ", ".join(c.name for c in scope.failed)
        return _Skip(f"host {label} is in no observed cluster, and {names} could not be "
                     "observed")
    if scope.all_clusters:
        return f"host {label} is not a container instance of any cluster"
    return OUT


def _service(key: str, owned: _Owned, scope: Scope, hosts: _Hosts, rules: Rules,
             now: float) -> _Outcome:
    owner = owned.owner
    view = scope.view(owner.cluster) if owner.cluster else None
    if owner.kind is Kind.TASK or (owner.cluster and owner.task):
        if view is None:
            if not scope.all_clusters:
                return OUT
            if owner.kind is Kind.TASK:  # every cluster was listed, and this one is not among them
                return f"cluster {owner.cluster} of task {owner.task} does not exist"
            # An agent's record of a task of a vanished cluster: the host decides.
            return _by_host(key, owned, scope, hosts, rules)
        if not view.ok:
            return _Skip(f"cluster {view.name} could not be observed")
        if owner.task in view.gone_tasks:
            return f"task {owner.task} of cluster {view.name} no longer exists"
        evidence = view.tasks.get(owner.task)
        if evidence is None:
            return _Skip(f"the state of task {owner.task} of cluster {view.name} is unknown")
        task = evidence.task
        if task.stopping:
            return (f"task {owner.task} of cluster {view.name} is {task.last_status or '?'} "
                    f"(desired {task.desired_status or '?'})")
        if owner.kind is Kind.TASK:
            return _task_target(key, owned, view, evidence, hosts, rules, now)
        return _agent_task_target(key, owned, view, evidence, scope, hosts, rules, now)
    return _by_host(key, owned, scope, hosts, rules)


def _by_host(key: str, owned: _Owned, scope: Scope, hosts: _Hosts, rules: Rules) -> _Outcome:
    """An agent record without an ECS task: its host decides."""
    found = hosts.live(owned.owner.host)
    if found is None:
        return _host_verdict(owned.owner.host, scope, hosts)
    _, host = found
    return _target(key, owned, host.ip, None, "", rules, 0.0)


def _agent_task_target(key: str, owned: _Owned, view: ClusterView, evidence: TaskEvidence,
                       scope: Scope, hosts: _Hosts, rules: Rules, now: float) -> _Outcome:
    task = evidence.task
    label = owned.owner.host
    found = hosts.live(label)
    instance = hosts.instance(task.container_instance_arn)
    if found is not None:
        _, host = found
        if task.container_instance_arn and host.instance_arn != task.container_instance_arn:
            return _Skip(f"host {label} is not the container instance of task {task.id}")
        return _target(key, owned, host.ip, evidence, view.name, rules, now)
    failed = hosts.in_failed(label)
    if failed is not None:
        return _Skip(f"host {label} is in cluster {failed.name}, whose observation failed")
    if scope.failed:
        return _Skip(f"host {label} is in no observed cluster, and "
                     f"{', '.join(c.name for c in scope.failed)} could not be observed")
    if instance is not None and instance.live:
        return _Skip(f"host {label} does not match task {task.id}'s container instance "
                     f"{instance.label or instance.instance_id}")
    return (f"task {task.id} of cluster {view.name} runs on no live container instance "
            f"that host {label} is")


def _task_target(key: str, owned: _Owned, view: ClusterView, evidence: TaskEvidence,
                 hosts: _Hosts, rules: Rules, now: float) -> _Outcome:
    task = evidence.task
    if task.eni_ips:
        ip = task.eni_ips[0]
    else:
        instance = hosts.instance(task.container_instance_arn)
        if instance is None or not instance.live:
            return _Skip(f"task {task.id} has no ENI and no live container instance")
        ip = instance.ip
    return _target(key, owned, ip, evidence, view.name, rules, now)


def _target(key: str, owned: _Owned, ip: str, evidence: TaskEvidence | None, cluster: str,
            rules: Rules, now: float) -> _Outcome:
    """A live instance: a probe target, or kept when it is not to be checked, or skipped
    (or suspect) when ECS does not back the record's claim about its task."""
    owner = owned.owner
    if owner.port.endswith("/udp") or not rules.check_health:
        return KEEP
    srv = [r for r in owned.records if r.type == "SRV"]
    if not srv:
        return KEEP  # e.g. a task's own A record: it goes when the task goes
    try:
        ports = {parse_srv(v).port for r in srv for v in r.values}
    except ValueError as exc:
        return _Skip(f"unreadable SRV value: {exc}")
    if len(ports) != 1:
        return _Skip(f"SRV records of one instance disagree on the port: {sorted(ports)}")
    port = ports.pop()
    records = tuple(owned.task_records or owned.records)
    if evidence is None:  # an agent record of a container ECS did not start
        return Target(key=key, ip=ip, port=port, path=rules.default_path, records=records)
    declaration = _judgeable(evidence, owner, port, rules, now)
    if not isinstance(declaration, Declaration):
        return declaration
    task = evidence.task
    if declaration.unusable:
        return _NoVerdict(f"container {declaration.container} of task {task.id}: "
                          f"{declaration.unusable}", task=f"{cluster}/{task.id}")
    if declaration.check is Check.NONE:
        return KEEP
    return Target(key=key, ip=ip, port=port,
                  path=check_path(declaration, rules.default_path)
                  if declaration.check is Check.HTTP else "",
                  check=declaration.check, cluster=cluster, task=task.id, task_arn=task.arn,
                  records=records, ecs_healthy=ecs_vouches(evidence, declaration),
                  failures=failures(task, port))


def _judgeable(evidence: TaskEvidence, owner: Owner, port: int, rules: Rules,
               now: float) -> Declaration | _Outcome:
    """The declaration to check the task's service by, when ECS backs probing it at ``port``
    now; else why not.

    Only a task ECS reports RUNNING is judged (a PENDING one is still pulling or starting).
    The record's port must be a declared service's port ECS says the task has
    (:func:`~ecssd_agent.sweep.evidence.backing`), and the task must be past its grace
    (:func:`~ecssd_agent.sweep.evidence.grace_seconds`).
    """
    task = evidence.task
    if task.last_status != RUNNING:
        return _Wait(f"task {task.id} is {task.last_status or '?'}: judged once RUNNING")
    declaration = backing(evidence, owner, port)
    if isinstance(declaration, Doubt):
        return _Suspect(declaration.reason) if declaration.suspect else _Wait(declaration.reason)
    grace = grace_seconds(evidence, declaration, rules.grace_seconds)
    began = task.began
    if began is not None and now - began.timestamp() < grace:
        # real ECS always dates a task; moto does not
        return _Wait(f"task {task.id} started less than {grace:g}s ago")
    return declaration


def _host_record(label: str, service_keys: Sequence[str], deleted: set[str], scope: Scope,
                 hosts: _Hosts) -> _Outcome:
    """A host's A record: deleted only with the host's last service record."""
    if hosts.live(label) is not None:
        return KEEP
    verdict = _host_verdict(label, scope, hosts)
    if isinstance(verdict, _Skip):
        return verdict
    surviving = [k for k in service_keys if k not in deleted]
    if surviving:
        return OUT if isinstance(verdict, _Out) else _Skip(
            f"host {label} still has {len(surviving)} record set(s) that were not deleted")
    if isinstance(verdict, str):
        return verdict
    if service_keys:  # restricted sweep: every record of the host named a swept cluster
        return f"host {label} left the swept cluster(s) its records named"
    return OUT


# --- decide: probe results -> deletions and stops ----------------------------------------

def decide(assessment: Assessment, results: Mapping[str, Verdict], rules: Rules) -> Plan:
    """Deletions and StopTask calls, the two kinds apart.

    Evidence: the orphans, unless the delete-fraction guard refuses them
    (:func:`_delete_fraction`). Verdicts: an instance that failed its check is acted on
    (its records deleted, its task stopped) only when the path to it is shown to work
    (:func:`_held`) and it has now failed ``rules.check_failures`` sweeps in a row; until then
    its count is written on its task (:attr:`Plan.tags`). A healthy verdict clears the count.
    """
    plan = Plan()
    deletable = {d.record.key for d in assessment.orphans} | assessment.alive
    for target in assessment.targets:
        deletable.update(r.key for r in target.records)
    plan.guard = _figures(assessment, results, len(deletable))
    plan.refused = _delete_fraction(plan.guard, rules)
    if plan.refused:
        plan.refused_by = "delete_fraction"
    else:
        plan.deletions.extend(assessment.orphans)
    planned_keys = {d.record.key for d in plan.deletions}
    stopped: set[tuple[str, str]] = set()
    tags: dict[tuple[str, str], tuple[dict[str, str], set[str]]] = {}

    def tag(target: Target, count: int) -> None:
        to_set, to_remove = tags.setdefault((target.cluster, target.task_arn), ({}, set()))
        if count:
            to_set[failure_tag(target.port)] = str(count)
        else:
            to_remove.add(failure_tag(target.port))

    for target in assessment.targets:
        verdict = results.get(target.key)
        if verdict is None:
            plan.unjudged.append(target)
            continue
        if not verdict.judged:
            plan.no_verdict.append((target, verdict.detail))
            continue
        if verdict.healthy:
            plan.healthy.append(target)
            if target.failures and target.task_arn:
                tag(target, 0)
            continue
        if target.ecs_healthy:
            plan.ecs_healthy.append((target, verdict))
            continue
        count = target.failures + 1
        held = _held(target, plan.guard)
        if not held and count < rules.check_failures and not target.task_arn:
            held = ("no ECS task to keep its failures in a row on: its host's agent "
                    "withdraws it when its container stops")
        if held:
            plan.held.append(Failing(target, verdict, target.failures, held))
            continue
        if count < rules.check_failures:
            plan.failing.append(Failing(target, verdict, count))
            tag(target, count)
            continue
        plan.unhealthy.append((target, verdict))
        for record in target.records:
            if record.key not in planned_keys:
                planned_keys.add(record.key)
                plan.deletions.append(Deletion(record, f"unhealthy: {verdict.detail}"))
        if rules.stop_unhealthy and target.task and (target.cluster, target.task) not in stopped:
            stopped.add((target.cluster, target.task))
            reason = f"ecssd health check failed: {verdict.detail}"[:255]
            plan.stops.append(Stop(target.cluster, target.task, reason))
        elif target.task_arn and not rules.stop_unhealthy:
            kept = min(count, rules.check_failures)  # the task runs on: its count stays,
            if kept != target.failures:  # at the threshold (acted on again next time)
                tag(target, kept)
    plan.tags = [TagChange(cluster, arn, tuple(sorted(to_set.items())),
                           tuple(sorted(to_remove - set(to_set))))
                 for (cluster, arn), (to_set, to_remove) in sorted(tags.items())
                 if (cluster, arn.rsplit("/", 1)[-1]) not in stopped]
    plan.held_back = _held_back(plan)
    return plan


def _figures(assessment: Assessment, results: Mapping[str, Verdict],
             deletable: int) -> GuardFigures:
    judged = [(t, results[t.key]) for t in assessment.targets
              if t.key in results and results[t.key].judged]
    reached = {t.ip for t, v in judged if v.reached}
    unreachable = sorted({t.ip for t, v in judged if not v.healthy and t.ip not in reached})
    return GuardFigures(deletable=deletable, planned=len(assessment.orphans),
                        probed=len(judged), failed=sum(1 for _, v in judged if not v.healthy),
                        unreachable=unreachable,
                        fail_open=bool(judged) and not any(v.healthy for _, v in judged))


def _held(target: Target, figures: GuardFigures) -> str:
    """Why a failed verdict counts for nothing this run ("" when it counts).

    Two signs that the path, not the instance, is what failed. (1) Every instance this run
    probed failed (:attr:`GuardFigures.fail_open`): a broken path from the sweep, or a
    dependency every service's check includes; stopping every task helps neither, so none is
    judged (load balancers fail open the same way). (2) Nothing at the instance's address
    answered at all, no connection and no reset (:attr:`GuardFigures.unreachable`): the host,
    or the path to it, is down, and that says nothing about the instance; only that address
    is held, every other is judged. An instance that did answer (any HTTP status, a hung
    reply, a reset) reached its host: the path works, the instance failed.
    """
    if figures.fail_open:
        return (f"every one of the {figures.probed} instances probed failed: nothing is "
                "acted on (the sweep's own path, or something every check depends on, "
                "is down)")
    if target.ip in figures.unreachable:
        return (f"nothing at {target.ip} answered (no connection, no reset): the host or "
                "the path to it may be down")
    return ""


def _held_back(plan: Plan) -> str:
    """One sentence for the run: why verdicts were held back ("" when none was)."""
    figures = plan.guard
    if not plan.held:
        return ""
    if figures.fail_open:
        return (f"every one of the {figures.probed} probed instances failed: no verdict "
                "acted on (fail open)")
    addresses = sorted({f.target.ip for f in plan.held if f.target.ip in figures.unreachable})
    if addresses:
        return (f"{len(plan.held)} failed instance(s) held: nothing answered at "
                f"{', '.join(addresses[:10])}{' ...' if len(addresses) > 10 else ''}")
    return ""


def _delete_fraction(figures: GuardFigures, rules: Rules) -> str:
    """Refuse the orphans' deletion when it is ``MAX_DELETE_FRACTION`` or more of what this run
    decides on evidence, and more than :data:`DELETE_FLOOR` record sets.

    The denominator counts the record sets this run decides on ECS's and EC2's word: the
    orphans (owners ECS/EC2 show gone) and every record set of an owner they show alive
    (probed or not; live hosts' A records and task A records included). Never counted:
    record sets whose judgement was withheld (a failed observation, an unknown state),
    suspect ones, out-of-scope record sets and records of other writers. Probe verdicts are
    not in it: they are held back by their own evidence (:func:`_held`), not by a share.

    "Or more" (``>=``): at the default 0.5 a plan deleting exactly half is refused. The
    floor keeps small clusters clean: two gone record sets (a stopped task's SRV record, a
    gone host's last service and its A record) always go.
    """
    if (figures.planned > DELETE_FLOOR and rules.max_delete_fraction < 1
            and figures.planned >= rules.max_delete_fraction * figures.deletable):
        return (f"{figures.planned} of {figures.deletable} deletable record sets would be "
                f"deleted, at least MAX_DELETE_FRACTION={rules.max_delete_fraction:g}: "
                "no orphan deleted")
    return ""
