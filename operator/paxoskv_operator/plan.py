"""What the operator does next for one PaxosKVCluster, decided from what it observed.

Pure functions of an `Observed` snapshot: `next_action` picks one step, `status` writes
what the resource reports. The handlers observe, write the status, then carry the step
out; the next pass observes again. So every step is idempotent by construction: an
operator killed at any point finds, on its next pass, either the step done (and picks the
next one) or not done (and does it again).

Membership, one member at a time (the node's membership API makes each step safe; the
order below keeps a quorum of ready members throughout):
- Bootstrap: every pod starts with `--join`. Only pod 0 of a resource that never had a
  cluster is told to bootstrap a cluster of itself alone; every other member is added.
  Growing from one member uses the one code path that every scale-up uses, and it lets
  the node refuse a second bootstrap (it asks its peers first). A recorded cluster id,
  or any pod or claim with data, means a cluster exists: it is never bootstrapped again,
  even if every member lost its data (that is reported; repairing it by force would lose
  acknowledged writes silently).
- Scale up: the pod first (StatefulSet replicas), then add it, once it waits to join;
  the add answers once the new member caught up.
- Scale down: remove the member with the highest ordinal first, then shrink the
  StatefulSet, then delete the claims of pods that are gone.
- Replace: a member whose pod waits to join (its volume came back empty, so it has a new
  member id) is removed, then added back under the same name as a new member.
- A non-member pod that holds this cluster's data (removed earlier, its claim kept) has
  its claim and pod deleted, so that it comes back empty and can join. A pod whose claim
  is gone (deleted by hand, or by that step) is deleted too: the StatefulSet makes a
  pod's claim only when it makes the pod.
Steps start only when every member but the one being removed is ready, and a step found
half done (an unsettled configuration) is resumed first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QUORUM_LOST = "NoQuorum"


@dataclass(frozen=True)
class Pod:
    """A node pod as observed: from the API server and from its own /v1/identity."""

    ordinal: int
    ready: bool = False
    ip: str | None = None
    terminating: bool = False
    identity: dict[str, Any] | None = None  # its answer; None: it did not answer

    @property
    def state(self) -> str:
        """"member", "joining", "bootstrapping" or "down" (no answer)."""
        return str(self.identity.get("state")) if self.identity else "down"

    @property
    def member_id(self) -> str | None:
        return None if self.identity is None else self.identity.get("member_id")

    @property
    def cluster_id(self) -> str | None:
        return None if self.identity is None else self.identity.get("cluster_id")


@dataclass(frozen=True)
class Config:
    """The cluster's configuration, as its most advanced member answering holds it."""

    epoch: int
    settled: bool
    members: dict[str, str]  # name -> member id

    @property
    def quorum(self) -> int:
        return len(self.members) // 2 + 1


@dataclass(frozen=True)
class Observed:
    name: str  # the resource's; pods are <name>-<ordinal>
    desired: int
    paused: bool = False
    statefulset_replicas: int | None = None  # None: no StatefulSet yet
    pods: dict[int, Pod] = field(default_factory=dict)
    claims: frozenset[int] = frozenset()  # ordinals that have a data claim
    cluster_id: str | None = None  # as recorded in the status

    def pod_name(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"

    def ordinal(self, pod_name: str) -> int | None:
        prefix, _, number = pod_name.rpartition("-")
        return int(number) if prefix == self.name and number.isdigit() else None

    @property
    def cluster(self) -> str | None:
        """The cluster id: recorded, else the one a pod answers with."""
        if self.cluster_id is not None:
            return self.cluster_id
        return next((p.cluster_id for _, p in sorted(self.pods.items())
                     if p.state == "member" and p.cluster_id), None)

    @property
    def config(self) -> Config | None:
        """The newest configuration a member of the cluster answers with."""
        best: Config | None = None
        for pod in self.pods.values():
            raw = (pod.identity or {}).get("config")
            if pod.state != "member" or pod.cluster_id != self.cluster or not raw:
                continue
            config = Config(int(raw["epoch"]), bool(raw["settled"]),
                            {m["name"]: m["member_id"] for m in raw["members"]})
            if best is None or (config.epoch, config.settled) > (best.epoch, best.settled):
                best = config
        return best


# -- the steps -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Wait:
    """Nothing to do now; `reason` and `message` say why (CamelCase reason)."""

    reason: str
    message: str
    degraded: bool = False  # worth a warning: something is wrong, not just in progress


@dataclass(frozen=True)
class ScaleStatefulSet:
    replicas: int


@dataclass(frozen=True)
class Bootstrap:
    ordinal: int
    member_id: str


@dataclass(frozen=True)
class Add:
    ordinal: int


@dataclass(frozen=True)
class Remove:
    name: str
    why: str  # "scale down" or "lost its data"


@dataclass(frozen=True)
class Resume:
    epoch: int


@dataclass(frozen=True)
class DeletePod:
    """Delete a pod whose claim is gone, so that the StatefulSet makes both anew (it
    makes a pod's claims only when it makes the pod)."""

    ordinal: int


@dataclass(frozen=True)
class DeleteClaim:
    """Delete the data claim of a pod (and the pod, if it runs) that must come back empty."""

    ordinal: int
    why: str


Action = (Wait | ScaleStatefulSet | Bootstrap | Add | Remove | Resume | DeleteClaim
          | DeletePod)
IDLE = Wait("Idle", "the cluster is as the resource asks")


def next_action(o: Observed) -> Action:
    """The one step to take now."""
    if o.paused:
        return Wait("Paused", "spec.paused is true: no change is made")
    if o.statefulset_replicas is None:
        return ScaleStatefulSet(1)
    orphaned = sorted(n for n, p in o.pods.items() if n not in o.claims and not p.terminating)
    if orphaned:
        return DeletePod(orphaned[0])
    config = o.config
    if o.cluster is None:
        return _bootstrap(o)
    if config is None:
        if o.pods and all(p.state == "joining" for p in o.pods.values()):
            return Wait("DataLost", f"every pod of cluster {o.cluster} lost its data; it is "
                        "not bootstrapped again (acknowledged writes would be lost silently):"
                        " delete and recreate the resource to start anew", degraded=True)
        return Wait(QUORUM_LOST, f"no member of cluster {o.cluster} answers", degraded=True)
    if not config.settled:
        return Resume(config.epoch)
    members = {o.ordinal(name): member_id for name, member_id in config.members.items()}
    lost = [n for n, mid in members.items() if n is not None and n in o.pods
            and o.pods[n].state == "joining" and o.pods[n].member_id != mid]
    unready = [o.pod_name(n) for n in sorted(n for n in members if n is not None)
               if n not in o.pods or not o.pods[n].ready]
    if lost and len(config.members) > 1:
        name = o.pod_name(lost[0])
        others = [p for p in unready if p != name]
        if others:
            return _unhealthy(others, f"replace {name}")
        return Remove(name, "lost its data")
    # Scaling.
    size = len(config.members)
    if size < o.desired:
        ordinal = min(n for n in range(o.desired) if n not in members)
        if o.statefulset_replicas < ordinal + 1:
            return ScaleStatefulSet(ordinal + 1)
        pod = o.pods.get(ordinal)
        if pod is not None and pod.state == "member" and pod.cluster_id == o.cluster:
            return DeleteClaim(ordinal, "it holds this cluster's data from before it was "
                                        "removed; it must come back empty to join again")
        if pod is not None and pod.state == "member":
            return Wait("ForeignData", f"{o.pod_name(ordinal)} holds data of another cluster "
                        f"({pod.cluster_id}); delete its claim if that data is not wanted",
                        degraded=True)
        if pod is None or pod.state != "joining" or pod.terminating:
            return Wait("Starting", f"waiting for {o.pod_name(ordinal)} to start and wait "
                        "to join")
        if unready:
            return _unhealthy(unready, f"add {o.pod_name(ordinal)}")
        return Add(ordinal)
    if size > o.desired:
        highest = max((n for n in members if n is not None), default=None)
        if highest is None:
            return Wait("UnknownMembers", "the members are not this resource's pods: "
                        f"{', '.join(sorted(config.members))}", degraded=True)
        name = o.pod_name(highest)
        others = [p for p in unready if p != name]  # the one removed may be down
        if others:
            return _unhealthy(others, f"remove {name}")
        return Remove(name, "scale down")
    if o.statefulset_replicas != o.desired:
        return ScaleStatefulSet(o.desired)
    leftover = sorted(n for n in o.claims if n >= o.desired and n not in o.pods)
    if leftover:
        return DeleteClaim(leftover[0], "its member was removed and its pod is gone")
    if unready:
        return Wait("MembersNotReady", f"not ready: {', '.join(unready)}", degraded=True)
    return IDLE


def _bootstrap(o: Observed) -> Action:
    first = o.pods.get(0)
    others = sorted(n for n in o.claims if n != 0)
    if others:
        return Wait("ClaimsWithoutCluster", "no cluster is recorded but claims of other pods "
                    f"exist ({', '.join(o.pod_name(n) for n in others)}); start their pods "
                    "or delete the claims", degraded=True)
    if first is None or first.state != "joining" or first.member_id is None:
        return Wait("Bootstrapping", f"waiting for {o.pod_name(0)} to start")
    return Bootstrap(0, first.member_id)


def _unhealthy(unready: list[str], step: str) -> Wait:
    return Wait("MembersNotReady", f"{step} waits until every member is ready (not ready: "
                f"{', '.join(unready)})", degraded=True)


# -- the status ----------------------------------------------------------------------------

def condition(kind: str, true: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if true else "False", "reason": reason,
            "message": message}


def status(o: Observed, action: Action, generation: int, selector: str) -> dict[str, Any]:
    """The resource's status for this observation and the step about to be taken."""
    config = o.config
    members = []
    for name, member_id in sorted((config.members if config else {}).items()):
        ordinal = o.ordinal(name)
        pod = o.pods.get(ordinal) if ordinal is not None else None
        serving = pod is not None and pod.member_id == member_id and pod.state == "member"
        members.append({"name": name, "memberId": member_id,
                        "ready": bool(pod and pod.ready and serving), "voting": True,
                        "caughtUp": bool(pod and pod.ready and serving)})
    ready = sum(1 for m in members if m["ready"])
    quorate = config is not None and ready >= config.quorum
    progressing = not isinstance(action, Wait) or action.reason in ("Starting",
                                                                    "Bootstrapping")
    whole = (config is not None and len(members) == o.desired and ready == len(members)
             and config.settled)
    degraded = isinstance(action, Wait) and action.degraded
    if config is None:
        quorum_message = "no member answers" if o.cluster else "no cluster yet"
    else:
        quorum_message = (f"{ready} of {len(members)} members ready, {config.quorum} "
                          "needed")
    step = describe(o, action)
    return {
        "observedGeneration": generation,
        "replicas": len(members),
        "readyReplicas": ready,
        "selector": selector,
        "clusterId": o.cluster,
        "configEpoch": config.epoch if config else None,
        "members": members,
        "conditions": [
            condition("Ready", whole, "AllMembersReady" if whole else "NotAllReady",
                      f"{ready} of {o.desired} members ready"),
            condition("Quorate", quorate, "QuorumReady" if quorate else QUORUM_LOST,
                      quorum_message),
            condition("Progressing", progressing, _reason(action), step),
            condition("Degraded", degraded, _reason(action) if degraded else "Healthy",
                      step if degraded else "nothing wrong is seen"),
        ],
    }


def _reason(action: Action) -> str:
    return action.reason if isinstance(action, Wait) else type(action).__name__


def describe(o: Observed, action: Action) -> str:
    """One line on the step (for events, logs and the Progressing condition)."""
    match action:
        case Wait(message=message):
            return message
        case ScaleStatefulSet(replicas=n):
            return f"scaling the StatefulSet to {n} pods"
        case Bootstrap(ordinal=n, member_id=member_id):
            return f"bootstrapping the cluster on {o.pod_name(n)} (member id {member_id})"
        case Add(ordinal=n):
            return f"adding {o.pod_name(n)} as a member"
        case Remove(name=name, why=why):
            return f"removing member {name} ({why})"
        case Resume(epoch=epoch):
            return f"resuming the membership step to epoch {epoch}"
        case DeletePod(ordinal=n):
            return f"deleting {o.pod_name(n)}, whose claim is gone, to make both anew"
        case DeleteClaim(ordinal=n, why=why):
            return f"deleting the data claim of {o.pod_name(n)} ({why})"
    raise AssertionError(action)
