"""Who this node is: a cluster id and a member id per data directory, made once.

Safety rests on acceptors remembering their promises. A node whose data
directory was wiped (a pod back with an empty volume) remembers none, so it
must never vote as the member it was: it could help choose a second value for
a key whose first value it had accepted. So:

- A data directory records its member id (random, made at its first start)
  and the cluster it belongs to: the cluster id and every member's id.
- A node on an empty directory refuses to start unless told to bootstrap a new
  cluster (`--bootstrap`). Bootstrapping makes a member id, keeps it on disk
  (a crash mid-way resumes with it), and asks every peer for its own: only
  when every peer answers that it is bootstrapping too (all on empty
  directories, so no member has voted yet) does it record the cluster, whose
  id is a digest of the members' names and ids. A peer that already belongs to
  a cluster either lists this node's pending member id (it finished first:
  this node joins that same cluster) or another one (this node lost its data:
  it exits with one line; it may come back only as a new member, through a
  membership change).
- Peers present their cluster and member ids when their link opens, and a
  node refuses a peer whose ids are not the ones its cluster records, or whose
  member list differs: a wiped member restarted with `--bootstrap` by mistake,
  or a node started with another `--peers` list, is fenced out with a clear
  log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from paxoskv.core.config import Config, Member

log = logging.getLogger("paxoskv.identity")

IDENTITY_PATH = "/v1/identity"
CONFIG_META = "config"  # the metadata entry that holds the configuration a node adopted
CAUGHT_UP_META = "caught_up"  # "0" from joining until the step that added it settles
POLL_S = 0.2
LOG_EVERY_S = 5.0


class Meta(Protocol):
    """Where a data directory keeps its identity (storage.Storage's metadata table)."""

    def meta(self, name: str) -> str | None: ...
    def set_meta(self, values: dict[str, str | None]) -> None: ...


class IdentityError(Exception):
    """This data directory must not serve as the configured member; the message says why."""


@dataclass(frozen=True)
class Identity:
    cluster_id: str
    member_id: str
    members: dict[str, str]  # member name -> member id, this one included (see follow)

    def peer_problem(self, name: str, cluster_id: str, member_id: str) -> str | None:
        """Why a peer presenting these ids must be refused (None: it is who it says)."""
        if name not in self.members:
            return f"{name!r} is not a member of cluster {self.cluster_id}"
        if cluster_id != self.cluster_id:
            return (f"{name!r} belongs to cluster {cluster_id or '(none)'}, "
                    f"not {self.cluster_id} (another --peers list, or a lost data directory)")
        if member_id != self.members[name]:
            return (f"{name!r} presents member id {member_id or '(none)'}, but the cluster "
                    f"knows it as {self.members[name]}: it lost its data directory and may "
                    "rejoin only as a new member")
        return None

    def follow(self, config: Config) -> None:
        """Check peers against the members of `config`, the configuration the node
        adopted (a membership step adds and removes members; the cluster stays)."""
        self.members.clear()
        self.members.update({m.name: m.member_id for m in config.members})

    def headers(self, name: str) -> dict[str, str]:
        return {"X-PaxosKV-Peer": name, "X-PaxosKV-Cluster": self.cluster_id,
                "X-PaxosKV-Member": self.member_id}


def alone(name: str, member_id: str, url: str) -> tuple[Identity, Config]:
    """A new cluster of one member, made of a node that waits to join (what the operator
    asks of its first pod; the others then join one membership step at a time).

    Safe for the data: a joining node is on an empty directory, so it voted for nothing.
    The risk is a second cluster under the same names: the caller must bootstrap only the
    node it means (the request names the node's pending member id, so a node whose volume
    was replaced since is refused) and only when no cluster exists; the node refuses too
    when one of its peers answers as a member (see main.establish)."""
    members = {name: member_id}
    return (Identity(cluster_id_of(members), member_id, members),
            Config.initial([Member(name, url, member_id)]))


def a_member(answers: Mapping[str, dict[str, Any]]) -> str | None:
    """A peer that answers as a member of a cluster, if any."""
    return next((peer for peer, answer in sorted(answers.items())
                 if answer.get("state") == "member"), None)


def initial_config(identity: Identity, urls: Mapping[str, str]) -> Config:
    """The configuration a cluster bootstrapped with: its members' names, ids and URLs."""
    return Config.initial([Member(name, urls[name], member_id)
                           for name, member_id in identity.members.items()])


def cluster_id_of(members: Mapping[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(sorted(members.items())).encode()).hexdigest()
    return digest[:16]


def load(storage: Meta, names: list[str]) -> Identity | None:
    """The identity this directory recorded, checked against the configured member names."""
    cluster_id = storage.meta("cluster_id")
    if cluster_id is None:
        return None
    members: dict[str, str] = json.loads(storage.meta("members") or "{}")
    if storage.meta(CONFIG_META) is not None:
        # Membership changed since the bootstrap (or the node joined): the adopted
        # configuration says who the members are, --peers only where to find them.
        members = {m["name"]: m["member_id"]
                   for m in json.loads(str(storage.meta(CONFIG_META)))["members"]}
    elif sorted(members) != sorted(names):
        raise IdentityError(f"--peers names {', '.join(sorted(names))}, but this data "
                            f"directory belongs to cluster {cluster_id} of "
                            f"{', '.join(sorted(members))}; members change only through "
                            "a membership change")
    return Identity(cluster_id, str(storage.meta("member_id")), members)


def pending_member_id(storage: Meta) -> str:
    """This directory's member id while bootstrapping: made once, kept on disk."""
    member_id = storage.meta("member_id")
    if member_id is None:
        member_id = os.urandom(8).hex()
        storage.set_meta({"member_id": member_id})
    return member_id


def record(storage: Meta, identity: Identity) -> None:
    storage.set_meta({"cluster_id": identity.cluster_id, "member_id": identity.member_id,
                      "members": json.dumps(identity.members, sort_keys=True)})


def describe(name: str, names: list[str], identity: Identity | None, pending: str | None,
             config: Config | None = None, joining: bool = False) -> dict[str, Any]:
    """This node's answer on IDENTITY_PATH (a member's includes its configuration,
    from which a joining node learns that it was added)."""
    if identity is not None:
        answer = {"name": name, "state": "member", "cluster_id": identity.cluster_id,
                  "member_id": identity.member_id, "members": identity.members}
        if config is not None:
            answer["config"] = config.to_json()
        return answer
    return {"name": name, "state": "joining" if joining else "bootstrapping",
            "member_id": pending, "names": sorted(names)}


def joined(name: str, member_id: str, answers: Mapping[str, dict[str, Any]]
           ) -> tuple[Identity, Config] | None:
    """The cluster a joining node was added to, if a member's answer lists it."""
    for answer in answers.values():
        if answer.get("state") != "member" or not isinstance(answer.get("config"), dict):
            continue
        config = Config.from_json(answer["config"])
        me = config.member(name)
        if me is not None and me.member_id == member_id:
            members = {m.name: m.member_id for m in config.members}
            return Identity(str(answer["cluster_id"]), member_id, members), config
    return None


async def join(name: str, member_id: str, peers: Mapping[str, str],
               session: aiohttp.ClientSession) -> tuple[Identity, Config]:
    """Wait until a member's configuration lists this node (name and member id)."""
    waited = 0.0
    while True:
        answers = await ask(name, peers, session)
        found = joined(name, member_id, answers)
        if found is not None:
            return found
        if waited % LOG_EVERY_S < POLL_S:
            log.info(f"waiting to be added: paxoskv members add {name} {peers[name]}",
                     extra={"node": name, "peer": ",".join(sorted(answers))})
        await asyncio.sleep(POLL_S)
        waited += POLL_S


async def ask(name: str, peers: Mapping[str, str], session: aiohttp.ClientSession
               ) -> dict[str, dict[str, Any]]:
    """Every other peer's identity answer (the ones that answer)."""
    answers: dict[str, dict[str, Any]] = {}
    for peer, url in sorted(peers.items()):
        if peer == name:
            continue
        try:
            async with session.get(url.rstrip("/") + IDENTITY_PATH,
                                   timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                if resp.status == 200:
                    answers[peer] = await resp.json()
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            pass
    return answers


def decide(name: str, member_id: str, names: list[str],
           answers: Mapping[str, dict[str, Any]]) -> Identity | None:
    """The outcome of bootstrapping, given the peers' answers so far (None: wait)."""
    for peer, answer in sorted(answers.items()):
        if answer.get("state") == "member":
            members = dict(answer.get("members") or {})
            if members.get(name) == member_id:
                return Identity(str(answer["cluster_id"]), member_id, members)
            raise IdentityError(
                f"peer {peer} belongs to cluster {answer.get('cluster_id')}, which knows "
                f"member {name!r} as {members.get(name, '(absent)')}; this data directory is "
                "empty, so it is not that member (its data was lost): it may rejoin only as "
                "a new member, through a membership change")
        if sorted(answer.get("names") or []) != sorted(names):
            raise IdentityError(f"peer {peer} is bootstrapping with the members "
                                f"{', '.join(answer.get('names') or [])}, this node with "
                                f"{', '.join(sorted(names))}: give every node the same --peers")
    if any(peer not in answers for peer in names if peer != name):
        return None
    members = {peer: str(answers[peer]["member_id"]) for peer in names if peer != name}
    members[name] = member_id
    return Identity(cluster_id_of(members), member_id, members)


async def bootstrap(name: str, member_id: str, peers: Mapping[str, str],
                    session: aiohttp.ClientSession) -> Identity:
    """Ask every peer (name -> base URL) until the cluster's identity is settled."""
    names = sorted(peers)
    answers: dict[str, dict[str, Any]] = {}
    waited = 0.0
    while True:
        for peer, answer in (await ask(name, peers, session)).items():
            if answers.get(peer, {}).get("state") != "member":  # a member's answer stays
                answers[peer] = answer
        identity = decide(name, member_id, names, answers)
        if identity is not None:
            return identity
        if waited % LOG_EVERY_S < POLL_S:
            missing = [p for p in names if p != name and p not in answers]
            log.info("bootstrapping: waiting for peers", extra={"node": name,
                                                                "peer": ",".join(missing)})
        await asyncio.sleep(POLL_S)
        waited += POLL_S
