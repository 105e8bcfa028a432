"""Membership steps with real node processes under a continuous recorded workload.

A 3-member cluster holding a thousand keys grows to 5 and shrinks to 3 while the
fault runs' clients (tests/faults/workload.py) put, get and delete; the node driving
one step is killed (-9) in the middle of its rescan, restarted, and the step resumed;
then a member whose data directory is wiped is replaced (removed, added back new).
After every step each member holds every preloaded key (local reads), and at the end
the recorded history must check clean (tests/faults/checker.py).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from paxoskv.devcluster import LocalMember, free_ports
from tests.faults.checker import Op, check
from tests.faults.workload import client_loop
from tests.harness import LocalCluster, wait_until
from tests.test_membership_cluster import ADMIN, TOKEN, identity_state, start_joining

BULK = 1000  # enough keys that a rescan lasts long enough to kill its driver in it
WORKLOAD_KEYS = [f"f{i}" for i in range(4)]


async def admin(url: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(headers=ADMIN, timeout=120) as http:
        if body is None:
            return await http.get(url + path)
        return await http.post(url + path, json=body)


async def step(url: str, path: str, body: dict[str, Any], epoch: int,
               names: list[str]) -> None:
    started = time.monotonic()
    answer = await admin(url, path, body)
    print(f"{path} {body}: {time.monotonic() - started:.1f} s")
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert (got["epoch"], got["settled"]) == (epoch, True), got
    assert [m["name"] for m in got["members"]] == names, got


def member_id(listed: httpx.Response, name: str) -> str:
    return str(next(m["member_id"] for m in listed.json()["members"] if m["name"] == name))


async def each_member_holds_the_bulk(urls: list[str]) -> None:
    """Every preloaded key, read locally (this member's own chosen state) from each
    member, within a few seconds (a member outside a round's quorum learns it from
    the round's commit notice)."""
    semaphore = asyncio.Semaphore(64)

    async def holds(http: httpx.AsyncClient, key: str) -> bool:
        async with semaphore:
            answer = await http.post("/v1/get", json={"key": key, "consistency": "local"})
        return bool(answer.status_code == 200 and answer.json()["value"] == key)

    started = time.monotonic()
    for url in urls:
        missing = [f"bulk/{i}" for i in range(BULK)]
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            while missing:
                found = await asyncio.gather(*(holds(http, k) for k in missing))
                missing = [k for k, ok in zip(missing, found, strict=True) if not ok]
                assert not missing or time.monotonic() < deadline, (
                    f"{url} lacks {len(missing)} keys, e.g. {missing[:3]}")
                await asyncio.sleep(0.2)
    print(f"every member of {len(urls)} holds the bulk: {time.monotonic() - started:.1f} s")


async def preload(cluster: LocalCluster) -> None:
    async with cluster.async_client() as client:
        semaphore = asyncio.Semaphore(32)

        async def put(i: int) -> None:
            async with semaphore:
                await client.put(f"bulk/{i}", f"bulk/{i}", no_quorum="retry", timeout=30)

        await asyncio.gather(*(put(i) for i in range(BULK)))


async def kill_the_driver_mid_rescan(cluster: LocalCluster, watcher: str, epoch: int
                                     ) -> None:
    """Wait until member `watcher` holds `epoch` unsettled (the driver decided the
    step and is re-scanning), then kill -9 the driver, n1."""
    deadline = time.monotonic() + 60
    while True:
        seen = (await admin(watcher, "/v1/admin/members")).json()
        if seen["epoch"] == epoch and not seen["settled"]:
            break
        assert seen["epoch"] < epoch or not seen["settled"], "the step ended before the kill"
        assert time.monotonic() < deadline, f"epoch {epoch} never showed at {watcher}"
        await asyncio.sleep(0.01)
    cluster.kill(0)


async def scenario(cluster: LocalCluster, n4: LocalMember, n5: LocalMember,
                   history: list[Op]) -> None:
    await preload(cluster)
    stop = asyncio.Event()
    clients = [cluster.async_client() for _ in range(4)]
    rng = random.Random(1)
    loops = [asyncio.create_task(client_loop(i, c, WORKLOAD_KEYS, random.Random(rng.random()),
                                             history, stop))
             for i, c in enumerate(clients)]
    n1, n2, n3 = cluster.urls
    try:
        await step(n1, "/v1/admin/members/add", {"name": "n4", "url": n4.url}, 1,
                   ["n1", "n2", "n3", "n4"])
        await each_member_holds_the_bulk([n1, n2, n3, n4.url])

        # The driver dies in the rescan of its step; restarted, it resumes it.
        adding = asyncio.create_task(admin(n1, "/v1/admin/members/add",
                                           {"name": "n5", "url": n5.url}))
        await kill_the_driver_mid_rescan(cluster, n2, 2)
        try:
            interrupted = await adding
            raise AssertionError(f"the killed driver answered: {interrupted.text}")
        except httpx.HTTPError:
            pass
        refused = await admin(n2, "/v1/admin/members/remove", {"name": "n4"})
        assert refused.status_code == 409, refused.text  # one step at a time
        cluster.start(0)
        await asyncio.to_thread(cluster.wait_up, 0)
        await step(n1, "/v1/admin/members/resume", {}, 2, ["n1", "n2", "n3", "n4", "n5"])
        await each_member_holds_the_bulk([n1, n2, n3, n4.url, n5.url])

        # Shrink back to three, the first member too; each leaves once removed.
        await step(n2, "/v1/admin/members/remove", {"name": "n4"}, 3,
                   ["n1", "n2", "n3", "n5"])
        await each_member_holds_the_bulk([n1, n2, n3, n5.url])
        await step(n2, "/v1/admin/members/remove", {"name": "n1"}, 4, ["n2", "n3", "n5"])
        cluster.stop(0)
        await each_member_holds_the_bulk([n2, n3, n5.url])

        # Replace n3, as if its volume were lost: down, removed, wiped, and back with
        # --join under its old name and URL (a new member id).
        old_id = member_id(await admin(n2, "/v1/admin/members"), "n3")
        cluster.kill(2)
        await step(n2, "/v1/admin/members/remove", {"name": "n3"}, 5, ["n2", "n5"])
        shutil.rmtree(cluster.members[2].data_dir)
        cluster.start(2, join=True)
        await asyncio.to_thread(wait_until, lambda: identity_state(n3) == "joining", 20,
                                "n3 never waited to join")
        await step(n2, "/v1/admin/members/add", {"name": "n3", "url": n3}, 6,
                   ["n2", "n3", "n5"])
        assert member_id(await admin(n2, "/v1/admin/members"), "n3") != old_id
        await each_member_holds_the_bulk([n2, n3, n5.url])
        await asyncio.sleep(1)  # the workload goes on a little on the final members
    finally:
        stop.set()
        await asyncio.gather(*loops)
        for c in clients:
            await c.close()
    # Final reads through every remaining member.
    for process, url in enumerate([n2, n3, n5.url]):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for key in WORKLOAD_KEYS:
                invoke = time.time()
                got = (await http.post("/v1/get", json={"key": key})).json()
                history.append(Op(100 + process, "get", key, invoke, time.time(), "ok",
                                  found=got["found"], seen_value=got.get("value"),
                                  token=got["token"]))


@pytest.mark.timeout(300)
def test_grow_to_five_and_shrink_to_three_under_writes_with_the_driver_killed_mid_step(
        tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3, env={"PAXOSKV_ADMIN_TOKEN": TOKEN})
    n4, n5 = (LocalMember(f"n{i}", "127.0.0.1", port, tmp_path / f"n{i}")
              for i, port in zip((4, 5), free_ports(2), strict=True))
    joining: list[subprocess.Popen[bytes]] = []
    history: list[Op] = []
    try:
        cluster.start_all()
        joining += [start_joining(cluster, n4), start_joining(cluster, n5)]
        for member in (n4, n5):
            deadline = time.monotonic() + 20
            while identity_state(member.url) != "joining":
                assert time.monotonic() < deadline, f"{member.name} never waited to join"
                time.sleep(0.05)
        asyncio.run(scenario(cluster, n4, n5, history))
    finally:
        cluster.close()
        for proc in joining:
            proc.kill()
            proc.wait()
    report = check(history)
    outcomes = [op.outcome for op in history]
    print(f"{len(history)} operations: {outcomes.count('ok')} ok, "
          f"{outcomes.count('unknown')} unknown, {len(report.anomalies)} anomalies")
    assert outcomes.count("ok") > 100, outcomes.count("ok")
    assert report.ok, "\n".join(report.anomalies[:10])
    # Removed members say so; nothing else is an error.
    assert not cluster.log_problems(), cluster.log_problems()[:5]
