"""Membership steps during a simulated run, as an operator would take them.

The director takes a planned sequence of steps (`PLANS`) while the clients work
and the nemesis injects its faults: each step is run by the real
`server.membership.Membership` in a random running member's process (so a
crash or stall of that member hits the step where it stands), and a step that
fails is finished by `resume` on another member before the next one starts,
as `paxoskv members resume` would. A member being added is a process started
with `--join` on an empty disk (`SimCluster.join`); a removed member is stopped
for good, as its pod would be deleted; a replaced member comes back as a new
member under its old name.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

from paxoskv.core.config import Config, Member
from paxoskv.server.identity import IdentityError
from paxoskv.server.membership import Membership, StepRefused
from paxoskv.server.node import NoQuorum
from tests.sim.cluster import SimCluster

# members at start -> the steps: 3 -> 4 -> 5 -> 4 -> 3 with a replacement, 1 -> 2 -> 3
PLANS: dict[str, list[tuple[str, str]]] = {
    "grow-shrink": [("add", "n4"), ("add", "n5"), ("remove", "n5"), ("replace", "n2"),
                    ("remove", "n4")],
    "from-one": [("add", "n2"), ("add", "n3"), ("replace", "n1")],
}
STARTING = {"grow-shrink": ("n1", "n2", "n3"), "from-one": ("n1",)}


class Director:
    def __init__(self, cluster: SimCluster, rng: random.Random,
                 trace: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.rng = rng
        self.trace = trace
        self.done: list[str] = []  # the steps that settled

    def config(self) -> Config:
        """The newest configuration a member holds (in memory, or on its disk)."""
        configs = [m.node.config if m.node is not None else self.cluster.config_of(m)
                   for m in self.cluster.members.values()
                   if m.node is not None or not m.joining]
        return max(configs, key=lambda c: (c.epoch, c.settled))

    async def run(self, plan: list[tuple[str, str]], until: float) -> None:
        """Take the steps of `plan`, the first ones while the faults and the clients
        work; the steps left at `until` (the end of the fault window) run after it."""
        for action, name in plan:
            await asyncio.sleep(self.rng.uniform(0.3, 2.0))
            if self.cluster.loop.time() > until + 30.0:
                return
            if action in ("remove", "replace"):
                await self._until_settled(f"remove {name}", _removing(name), until)
                self._stop_for_good(name)
            if action in ("add", "replace"):
                member_id = self.cluster.join(name)
                self.trace(f"director: {name} waits to join as {member_id}")
                starting = asyncio.ensure_future(self._start_when_added(name, until))
                new = Member(name, f"sim://{name}", member_id)
                await self._until_settled(f"add {name}", _adding(new), until)
                await starting

    async def finish(self) -> None:
        """After the faults: settle a step left unsettled (resume until it is)."""
        while not self.config().settled:
            await self._on_driver(lambda m: m.resume(), "resume")
            await asyncio.sleep(0.5)

    async def _until_settled(self, what: str,
                             step: Callable[[Membership], Coroutine[Any, Any, Config]],
                             until: float) -> None:
        """Run `step`; if it fails, resume on other members until the configuration
        settles, then run `step` again if the failure was before its decision."""
        while self.cluster.loop.time() < until + 30.0:
            before = self.config()
            if await self._on_driver(step, what):
                return
            await asyncio.sleep(0.5)
            while not self.config().settled:
                await self._on_driver(lambda m: m.resume(), f"resume ({what})")
                await asyncio.sleep(0.5)
            if self.config().epoch > before.epoch:  # it was decided: resume finished it
                self.done.append(what)
                return

    async def _on_driver(self, step: Callable[[Membership], Coroutine[Any, Any, Config]],
                         what: str) -> bool:
        """Run `step` in a random running member's process; True if it settled."""
        config = self.config()
        up = [self.cluster.members[n] for n in config.names
              if self.cluster.members[n].node is not None
              and self.cluster.members[n].proc is not None]
        if not up:
            return False
        member = self.rng.choice(up)
        assert member.node is not None and member.proc is not None
        node = member.node
        task = self.cluster.loop.create_task(step(Membership(node)),
                                             context=member.proc.context.copy())
        await asyncio.wait([task])
        if task.cancelled():
            self.trace(f"director: {what} via {member.name}: the driver crashed")
            return False
        if isinstance(task.exception(), StepRefused | NoQuorum):
            self.trace(f"director: {what} via {member.name}: {task.exception()}")
            return False
        settled = task.result()
        self.trace(f"director: {what} via {member.name}: settled at epoch {settled.epoch}")
        if what.startswith(("add", "remove")):
            self.done.append(what)
        return True

    async def _start_when_added(self, name: str, until: float) -> None:
        """Start `name` (as `serve --join` keeps asking) once a member lists it."""
        member = self.cluster.members[name]
        while member.joining and self.cluster.loop.time() < until + 30.0:
            if member.proc is None:
                try:
                    self.cluster.start(name)
                    self.trace(f"director: {name} joined")
                    return
                except IdentityError:
                    pass
            await asyncio.sleep(0.2)

    def _stop_for_good(self, name: str) -> None:
        if self.cluster.members[name].proc is not None:
            self.cluster.crash(name)
        self.cluster.members[name].joining = True  # it may not restart (see _restart)
        self.trace(f"director: {name} removed and stopped")


Step = Callable[[Membership], Coroutine[Any, Any, Config]]


def _removing(name: str) -> Step:
    return lambda membership: membership.remove(name)


def _adding(member: Member) -> Step:
    return lambda membership: membership.add(member)
