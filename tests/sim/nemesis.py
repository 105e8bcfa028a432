"""Per-seed fault profile: clocks, message faults and a schedule of node faults.

Everything is drawn up front from the seed, so a run's schedule can be printed
and compared. Node faults may overlap; each one undoes only itself (a partition
heals only its own cuts), and all are undone by the end of the fault window.

Clocks: a majority of the members keep good time (within 20 ms, 100 ppm), as
the deadline guarantee assumes ("a majority of clocks must pass a deadline");
the others may be off by 0.5-6 s, beyond lifetimes.GRACE_MS, and drift by up
to 1 %.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from tests.sim.cluster import Clock, SimCluster
from tests.sim.network import MessageFaults

KINDS = {  # kind -> (weight, duration range in seconds)
    "stall": (3.0, (0.5, 6.0)),
    "crash": (2.0, (0.1, 5.0)),
    "partition": (1.5, (0.5, 6.0)),  # the victim cut off, both ways
    "one-way-out": (1.0, (0.5, 6.0)),  # the victim cannot reach the others
    "one-way-in": (1.0, (0.5, 6.0)),  # the others cannot reach the victim
    "link": (1.0, (0.5, 6.0)),  # one pair cut both ways
    "power": (0.3, (0.1, 3.0)),  # every node crashes at once
}


@dataclass(frozen=True)
class Fault:
    at: float  # virtual seconds
    kind: str
    victim: str
    lasts: float
    other: str = ""  # "link": the other end

    def __str__(self) -> str:
        who = "all" if self.kind == "power" else self.victim + (f"-{self.other}" if self.other
                                                                   else "")
        return f"{self.at:8.3f} {self.kind} {who} for {self.lasts:.3f}s"


@dataclass(frozen=True)
class Profile:
    clocks: dict[str, Clock]
    messages: MessageFaults
    faults: list[Fault]

    def describe(self) -> list[str]:
        lines = [f"clock {name}: skew {c.skew_s * 1000:+.0f} ms, drift {c.drift * 1e6:+.0f} ppm"
                 for name, c in self.clocks.items()]
        m = self.messages
        lines.append(f"messages: drop {m.drop:.3f}, duplicate {m.duplicate:.3f}, "
                     f"long delay {m.delay:.3f} (up to {m.delay_s[1]:.1f} s)")
        return lines + [f"fault {f}" for f in self.faults]


def draw_profile(rng: random.Random, names: list[str], duration: float) -> Profile:
    minority = (len(names) - 1) // 2
    bad = set(rng.sample(names, rng.randint(0, minority)))
    clocks = {}
    for name in names:
        if name in bad:
            clocks[name] = Clock(rng.choice([-1, 1]) * rng.uniform(0.5, 6.0),
                                 rng.uniform(-0.01, 0.01))
        else:
            clocks[name] = Clock(rng.uniform(-0.02, 0.02), rng.uniform(-1e-4, 1e-4))
    if rng.random() < 0.3:
        messages = MessageFaults()
    else:
        messages = MessageFaults(drop=rng.uniform(0, 0.05), duplicate=rng.uniform(0, 0.05),
                                 delay=rng.uniform(0, 0.1),
                                 delay_s=(0.005, rng.choice([0.05, 0.5, 1.5])))
    faults: list[Fault] = []
    mean_gap = rng.uniform(0.5, 3.0)
    t = rng.uniform(0.5, 2.0)
    kinds = list(KINDS)
    weights = [KINDS[k][0] for k in kinds]
    while t < duration - 0.5:
        kind = rng.choices(kinds, weights)[0]
        victim, other = rng.sample(names, 2)
        lasts = min(rng.uniform(*KINDS[kind][1]), duration - t)
        faults.append(Fault(round(t, 6), kind, victim, round(lasts, 6),
                            other if kind == "link" else ""))
        t += rng.expovariate(1 / mean_gap)
    return Profile(clocks, messages, faults)


async def inflict(cluster: SimCluster, faults: list[Fault],
                  trace: Callable[[str], None]) -> None:
    """Apply each fault at its time and undo it when it ends."""
    await asyncio.gather(*(_one(cluster, f, trace) for f in faults))


async def _one(cluster: SimCluster, fault: Fault, trace: Callable[[str], None]) -> None:
    loop = cluster.loop
    await asyncio.sleep(max(0.0, fault.at - loop.time()))
    names, victim, net = cluster.names, fault.victim, cluster.network
    kind = fault.kind
    if kind == "stall":
        proc = cluster.stall(victim)
        if proc is None:
            return trace(f"stall {victim}: skipped (down or stalled)")
        trace(f"stall {victim}")
        await asyncio.sleep(fault.lasts)
        trace(f"resume {victim}" if cluster.resume(proc) else f"resume {victim}: crashed since")
    elif kind in ("crash", "power"):
        victims = [victim] if kind == "crash" else names
        down = [n for n in victims if cluster.members[n].proc is not None]
        for name in down:
            cluster.crash(name)
        trace(f"{kind}: crash {' '.join(down) or 'nothing (down)'}")
        await asyncio.sleep(fault.lasts)
        for name in down:
            if cluster.members[name].proc is None:
                cluster.start(name)
                trace(f"restart {name}")
    else:
        others = [n for n in names if n != victim]
        paths = {
            "partition": [(victim, o) for o in others] + [(o, victim) for o in others],
            "one-way-out": [(victim, o) for o in others],
            "one-way-in": [(o, victim) for o in others],
            "link": [(victim, fault.other), (fault.other, victim)],
        }[kind]
        net.cut(paths)
        trace(f"cut {' '.join(f'{a}->{b}' for a, b in paths)}")
        await asyncio.sleep(fault.lasts)
        net.heal(paths)
        trace(f"heal {' '.join(f'{a}->{b}' for a, b in paths)}")
