"""One fault run: a recorded random workload against a local cluster while a nemesis
injects faults. tests/test_faults.py runs it as a program inside a private mount
namespace (the power-loss disk's mounts) and, for partitions, a network namespace
(nftables rules there must not touch the machine):

    unshare --mount --propagation private python -m tests.faults.run --seed 7 \
        --seconds 8 --root DIR --out run.json --power-loss
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from paxoskv.client import AsyncClient, PaxosKVError
from paxoskv.devcluster import LocalMember
from tests.faults.checker import Op, SessionLog
from tests.faults.disk import PowerLossDisk
from tests.faults.workload import SessionKeeper, client_loop
from tests.harness import LocalCluster

HOSTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
TABLE = "paxoskv_faults"


class Partitions:
    """Cuts links between nodes with nftables rules on addresses; each node dials
    from its own address, and every cut is checked with a real connection attempt."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        _nft(f"add table inet {TABLE}")
        _nft(f"add chain inet {TABLE} input {{ type filter hook input priority 0 ; "
             "policy accept ; }")

    def cut(self, pairs: list[tuple[int, int]]) -> None:
        """Drop packets from a to b for each (a, b): one-way cuts make asymmetric splits."""
        for a, b in pairs:
            src, dst = self.cluster.members[a].host, self.cluster.members[b].host
            _nft(f"add rule inet {TABLE} input ip saddr {src} ip daddr {dst} drop")
        for a, b in pairs:
            if _can_connect(self.cluster.members[a].host, self.cluster.members[b]):
                raise RuntimeError(f"partition {a}->{b} did not cut the link")

    def heal(self) -> None:
        _nft(f"flush chain inet {TABLE} input")

    def close(self) -> None:
        _nft(f"delete table inet {TABLE}")


def _nft(command: str) -> None:
    subprocess.run(["nft", *command.split()], check=True, capture_output=True)


def _can_connect(src: str, member: LocalMember) -> bool:
    with socket.socket() as s:
        s.bind((src, 0))
        s.settimeout(0.5)
        try:
            s.connect((member.host, member.port))
        except OSError:
            return False
    return True


FAILPOINT_EXIT = 86  # the status a node exits with when it crashes at a failpoint


class UnexpectedExit(Exception):
    """A node exited with no fault to explain it: a bug, which the run must not hide."""


async def revive(cluster: LocalCluster, faults: Counter[str]) -> None:
    """All run long: restart the nodes that crash by themselves at a failpoint (they
    exit with FAILPOINT_EXIT, only when failpoints are on); any other exit ends the run."""
    failpoints_on = "PAXOSKV_TEST_FAILPOINTS" in cluster.env
    while True:
        for i, member in enumerate(cluster.members):
            proc = cluster.procs.get(member.name)
            if proc is not None and proc.poll() is not None:
                if not (failpoints_on and proc.returncode == FAILPOINT_EXIT):
                    raise UnexpectedExit(f"{member.name} exited with status "
                                         f"{proc.returncode}; see {cluster.root}")
                del cluster.procs[member.name]
                cluster.start(i)
                faults["failpoint crash"] += 1
        await asyncio.sleep(0.05)


async def nemesis(cluster: LocalCluster, rng: random.Random, seconds: float,
                  partitions: Partitions | None, disk: PowerLossDisk | None,
                  faults: Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    # A power cut stops the whole cluster for a while: rarer than the rest.
    kinds = ["kill", "kill", "pause", "pause", "power cut"] + (
        ["partition", "partition", "one-way", "one-way"] if partitions else [])
    while loop.time() < deadline:
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        victim = rng.randrange(3)
        others = [i for i in range(3) if i != victim]
        # Runs with partitions start with one, so that every such run has some.
        kind = "partition" if partitions and not faults["partition"] else rng.choice(kinds)
        if kind in ("kill", "power cut"):
            # A power cut kills every node at once: only what reached the disk is left.
            victims = [victim] if kind == "kill" else list(range(3))
            for i in victims:
                cluster.kill(i)
            if kind == "power cut" and disk is not None:
                disk.power_cut()  # and the disk loses what it had not made durable
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            for i in victims:
                cluster.start(i)
            for i in victims:
                await asyncio.to_thread(cluster.wait_up, i)
        elif kind == "pause":
            # Up to 3.5 s: past the 2 s after which peers judge a member down and the
            # key's other members stand in for its home (a GC pause, a throttled pod).
            proc = cluster.procs[cluster.members[victim].name]
            proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(rng.uniform(0.2, 3.5))
            proc.send_signal(signal.SIGCONT)
        else:
            assert partitions is not None
            # The victim is the minority: cut both ways, or only its outgoing side.
            pairs = [(victim, o) for o in others]
            if kind == "partition":
                pairs += [(o, victim) for o in others]
            partitions.cut(pairs)
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            partitions.heal()
        faults[kind] += 1


@dataclasses.dataclass
class Run:
    history: list[Op]
    faults: Counter[str]
    sessions: dict[str, SessionLog]  # each client's session, with its keep-alives


async def fault_run(cluster: LocalCluster, seed: int, seconds: float,
                    partitions: Partitions | None = None, lifetimes: bool = False,
                    disk: PowerLossDisk | None = None) -> Run:
    """`lifetimes`: puts carry a deadline a few seconds ahead or the client's session."""
    rng = random.Random(seed)
    history: list[Op] = []
    stop = asyncio.Event()
    keys = [f"f{i}" for i in range(4)]
    # Clients know every node and fail over, as applications do.
    clients = [cluster.async_client() for _ in range(4)]
    logs: dict[str, SessionLog] = {}
    keepers = [SessionKeeper(c, 3000, logs) for c in clients] if lifetimes else []
    loops = [asyncio.create_task(client_loop(i, c, keys, random.Random(rng.random()),
                                             history, stop, lifetimes,
                                             keepers[i] if keepers else None))
             for i, c in enumerate(clients)]
    loops += [asyncio.create_task(keeper.run(stop)) for keeper in keepers]
    faults: Counter[str] = Counter()
    reviver = asyncio.create_task(revive(cluster, faults))
    try:
        nemesis_done = asyncio.create_task(nemesis(cluster, rng, seconds, partitions, disk,
                                                   faults))
        await asyncio.wait([nemesis_done, reviver], return_when=asyncio.FIRST_COMPLETED)
        if reviver.done():
            nemesis_done.cancel()
            reviver.result()  # raises UnexpectedExit
        nemesis_done.result()
        stop.set()
        await asyncio.gather(*loops)
        return await _settle(cluster, clients, keepers, logs, keys, history, faults)
    finally:
        reviver.cancel()
        stop.set()


async def _settle(cluster: LocalCluster, clients: list[AsyncClient],
                  keepers: list[SessionKeeper], logs: dict[str, SessionLog], keys: list[str],
                  history: list[Op], faults: Counter[str]) -> Run:
    """After the faults: close the sessions, then read every key through every node."""
    for keeper in keepers:
        if keeper.current is not None:
            keeper.current.closed_at = time.time()
            with contextlib.suppress(PaxosKVError, httpx.HTTPError):
                await keeper.client.close_session(keeper.current.id)
    await asyncio.to_thread(cluster.wait_ready, range(3))
    for c in clients:
        await c.close()
    for process in range(3):
        async with cluster.async_client(process) as client:
            for key in keys:
                invoke = time.time()
                entry = await client.get(key, no_quorum="retry", timeout=10.0)
                history.append(Op(100 + process, "get", key, invoke, time.time(), "ok",
                                  found=entry.found, seen_value=entry.value,
                                  token=entry.token))
    return Run(history, faults, logs)


def _env_items(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One fault run; writes the history, the "
                                     "faults and the nodes' log problems as JSON.")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--root", type=Path, required=True, help="data directories")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a test switch for every node")
    parser.add_argument("--node-env", action="append", default=[], metavar="I:NAME=VALUE",
                        help="a test switch for node I (0-based)")
    parser.add_argument("--lifetimes", action="store_true",
                        help="puts carry deadlines or the client's session")
    parser.add_argument("--partitions", action="store_true",
                        help="nodes on 127.0.0.11-13, cut with nftables (in a netns only)")
    parser.add_argument("--power-loss", action="store_true",
                        help="data on an ext4 image that power cuts shut down unflushed "
                        "(in a private mount namespace only)")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    disk = (PowerLossDisk(args.root / "disk.img", args.root / "disk")
            if args.power_loss else None)
    node_env: dict[int, dict[str, str]] = {}
    for item in args.node_env:
        index, _, pair = item.partition(":")
        node_env.setdefault(int(index), {}).update(_env_items([pair]))
    env = {"PAXOSKV_TEST_SEED": str(args.seed), **_env_items(args.env)}
    data = args.root / "disk" if disk is not None else args.root / "data"
    cluster = LocalCluster(data, 3, hosts=HOSTS if args.partitions else None, env=env,
                           node_env=node_env, log_dir=args.root / "logs")
    partitions = Partitions(cluster) if args.partitions else None
    try:
        cluster.start_all()
        run = asyncio.run(fault_run(cluster, args.seed, args.seconds, partitions,
                                    args.lifetimes, disk))
    finally:
        cluster.close()
        if partitions is not None:
            partitions.close()
        problems = cluster.log_problems()
        if disk is not None:
            disk.close()
    args.out.write_text(json.dumps({"faults": dict(run.faults),
                                    "history": [dataclasses.asdict(op) for op in run.history],
                                    "sessions": {sid: dataclasses.asdict(log)
                                                 for sid, log in run.sessions.items()},
                                    "log_problems": problems}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
