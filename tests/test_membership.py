"""Membership on the real node driver (simulated network and disks): adopting a
newer configuration, learning it from a peer that fences, and keeping it across
a restart."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from paxoskv.core.config import Config
from paxoskv.server.identity import CAUGHT_UP_META, CONFIG_META
from paxoskv.server.lifetimes import node_key
from paxoskv.server.membership import Membership, Progress, StepRefused
from tests.test_regressions import BUCKET, World, key_homed_on


def test_a_proposer_fenced_by_a_newer_epoch_learns_it_and_its_put_goes_through() -> None:
    """n2 and n3 adopt epoch 1 (the same members); n1, the key's home, still runs
    epoch 0. Its put, at once, is refused by the first member that answers (Fenced),
    it asks that member for its configuration, adopts it, and decides under epoch 1.
    (Given a moment, n1 learns epoch 1 from the first request n2 or n3 sends it.)"""
    key = key_homed_on("n1")
    seen: dict[str, object] = {}
    observed: list[Config] = []

    async def schedule(w: World) -> None:
        newer = Config(1, w.node("n1").config.members)
        w.node("n1").config_observers.append(observed.append)
        for name in ("n2", "n3"):
            assert w.node(name).adopt(newer) is not None
            assert w.node(name).adopt(newer) is None  # not newer the second time
        seen["put"] = await w.put("n1", key, "v")
        seen["read"] = await w.get("n2", key)
        seen["config"] = w.node("n1").config
        seen["fenced"] = w.node("n1").stats.fenced
        seen["newer"] = newer

    w = World()
    assert w.run(schedule) == []
    put, read = seen["put"], seen["read"]
    assert put.outcome == "ok" and put.token == 1  # type: ignore[attr-defined]
    assert read.outcome == "ok" and read.seen_value == "v"  # type: ignore[attr-defined]
    assert seen["config"] == seen["newer"]
    assert seen["fenced"] == 1  # one refused round, then one under epoch 1
    assert observed == [seen["newer"]]
    # Every member's disk holds the adopted configuration: a restart keeps it.
    for name in ("n1", "n2", "n3"):
        stored = w.cluster.members[name].disk.meta[CONFIG_META]
        assert Config.from_json(orjson.loads(stored)) == seen["newer"], name


def test_a_restarted_member_starts_with_the_configuration_it_adopted() -> None:
    seen: dict[str, Config] = {}

    async def schedule(w: World) -> None:
        newer = Config(3, w.node("n1").config.members)
        durable = w.node("n2").adopt(newer)
        assert durable is not None
        await durable
        w.crash("n2")
        await w.at(1.0)
        w.start("n2")
        await w.at(1.5)
        seen["after"], seen["newer"] = w.node("n2").config, newer

    w = World()
    assert w.run(schedule) == []
    assert seen["after"] == seen["newer"]


def test_a_configuration_notice_is_adopted_and_a_request_answered_with_the_config() -> None:
    seen: dict[str, object] = {}

    async def schedule(w: World) -> None:
        newer = Config(2, w.node("n1").config.members)
        seen["asked"] = await w.node("n3").links["n2"].call("c", None)
        w.node("n1").links["n2"].notify("c", newer.to_json())
        await w.at(1.0)
        seen["n2"], seen["newer"] = w.node("n2").config, newer
        seen["asked again"] = await w.node("n3").links["n2"].call("c", None)
        w.node("n1").links["n2"].notify("c", {"epoch": "not a configuration"})
        await w.at(1.5)
        seen["after junk"] = w.node("n2").config

    w = World()
    assert w.run(schedule) == []
    assert seen["n2"] == seen["newer"] == seen["after junk"]
    assert seen["asked again"] == seen["newer"].to_json()  # type: ignore[attr-defined]
    assert Config.from_json(seen["asked"]).epoch == 0  # type: ignore[arg-type]


def test_a_member_learns_a_newer_epoch_from_the_requests_of_a_peer_that_holds_it() -> None:
    """Only n3 adopts epoch 4; the requests it sends (its lifetimes' and liveness'
    rounds) carry epoch 4, and n1 and n2 ask it for its configuration."""
    seen: dict[str, object] = {}

    async def schedule(w: World) -> None:
        newer = Config(4, w.node("n1").config.members)
        w.node("n3").adopt(newer)
        await w.at(3.0)
        seen["configs"] = [w.node(n).config for n in ("n1", "n2")]
        seen["newer"] = newer

    w = World()
    assert w.run(schedule) == []
    assert seen["configs"] == [seen["newer"]] * 2


def test_removing_a_member_decides_fences_rescans_and_settles() -> None:
    """n1 drives the removal of n3 while keys exist: the step is decided in the
    configuration register, every member adopts epoch 1, every key is written
    through n1 and n2, and the settled configuration lists n1 and n2. Afterwards
    n3 is down for good and the cluster of two still answers."""

    async def schedule(w: World) -> None:
        for i in range(6):
            await w.put(f"n{i % 3 + 1}", f"k{i}", f"v{i}")
        settled = await Membership(w.node("n1")).remove("n3")
        assert (settled.epoch, settled.settled, settled.names) == (1, True, ("n1", "n2"))
        await asyncio.sleep(0.5)  # the settled form's notices reach the others
        assert [w.node(n).config for n in ("n1", "n2", "n3")] == [settled] * 3
        n2 = w.node("n2").acceptor
        assert {f"{BUCKET}/k{i}" for i in range(6)} <= set(n2.all_keys())
        assert {n2.record(k).epoch for k in n2.all_keys()} == {1}  # all written through
        # n3's node key, which it kept alive as a member, ended with the step.
        n3_key = await w.node("n1").read(node_key("n3"), 2.0, retry=True)
        assert not n3_key.live and n3_key.token >= 2, n3_key
        w.crash("n3")
        assert (await w.put("n2", "after", "x")).outcome == "ok"
        for i in range(6):
            assert (await w.get("n1", f"k{i}")).seen_value == f"v{i}"

    assert World().run(schedule) == []


def test_a_step_is_refused_while_a_member_is_unreachable_or_the_input_is_wrong() -> None:
    async def schedule(w: World) -> None:
        driver = Membership(w.node("n1"))
        w.crash("n2")
        await w.at(4.0)
        with pytest.raises(StepRefused) as down:
            await driver.remove("n3")
        assert (down.value.status, str(down.value)) == (
            503, "the cluster is not healthy: n2 not reachable from this node "
                 "(every member but one being removed must be)")
        with pytest.raises(StepRefused) as absent:
            await driver.remove("zz")
        assert (absent.value.status, str(absent.value)) == (400, "'zz' is not a member")
        assert w.node("n1").config.epoch == 0

    assert World().run(schedule) == []


def test_a_step_whose_driver_stopped_after_deciding_is_resumed_by_another_member() -> None:
    """n1 decides the removal of n3 and crashes before telling anyone. n2 cannot
    start another step (it reads the register first: a step is in progress), and
    its resume carries the decided step through to the settled configuration."""

    async def schedule(w: World) -> None:
        await w.put("n1", "k", "v")
        first = Membership(w.node("n1"))
        current = w.node("n1").config
        first.progress = Progress("remove n3", "deciding")
        await first._decide(current, current.removing("n3"))
        w.crash("n1")
        w.start("n1")
        await w.at(w.loop.time() + 1.0)
        second = Membership(w.node("n2"))
        with pytest.raises(StepRefused) as busy:
            await second.remove("n1")
        assert busy.value.status == 409 and "in progress" in str(busy.value)
        settled = await second.resume()
        assert (settled.epoch, settled.settled, settled.names) == (1, True, ("n1", "n2"))
        assert (await w.get("n1", "k")).seen_value == "v"

    assert World().run(schedule) == []


def test_a_member_that_joined_is_caught_up_once_its_step_settles() -> None:
    async def schedule(w: World) -> None:
        node = w.node("n2")
        node.caught_up = False  # as a node that has just joined starts
        unsettled = Config(1, node.config.members, settled=False)
        for config, caught_up in ((unsettled, False), (unsettled.settle(), True)):
            durable = node.adopt(config)
            assert durable is not None
            await durable
            assert node.caught_up is caught_up
        assert w.cluster.members["n2"].disk.meta[CAUGHT_UP_META] == "1"

    assert World().run(schedule) == []


def test_a_member_that_missed_the_settled_broadcast_learns_it_from_a_peer() -> None:
    """n3 holds a step's unsettled form; n1 and n2 settled it while n3's links were
    down, so n3 missed the broadcast. Same epoch: no request tells n3, so it asks
    its peers (seen in a CI run: a pod added just as the step settled stayed not
    ready)."""
    seen: dict[str, object] = {}

    async def schedule(w: World) -> None:
        n3 = w.node("n3")
        n3.caught_up = False  # as a node that has just joined starts
        unsettled = Config(1, n3.config.members, settled=False)
        for name in ("n1", "n2", "n3"):
            w.node(name).adopt(unsettled)
        for name in ("n1", "n2"):
            w.node(name).adopt(unsettled.settle())  # no notice reaches n3
        await w.at(3.0)
        seen["n3"], seen["settled"], seen["caught up"] = (n3.config, unsettled.settle(),
                                                          n3.caught_up)

    assert World().run(schedule) == []
    assert seen["n3"] == seen["settled"]
    assert seen["caught up"] is True
