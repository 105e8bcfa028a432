"""Membership on the real node driver (simulated network and disks): adopting a
newer configuration, learning it from a peer that fences, and keeping it across
a restart."""

from __future__ import annotations

import orjson

from paxoskv.core.config import Config
from paxoskv.server.node import CONFIG_META
from tests.test_regressions import World, key_homed_on


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
