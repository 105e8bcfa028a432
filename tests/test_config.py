"""The cluster configuration (core.config): quorums, homes, steps and their refusals."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paxoskv.core.ballot import ZERO, Ballot, zero
from paxoskv.core.config import Config, ConfigError, Member, StepInProgress


def member(name: str) -> Member:
    return Member(name, f"http://{name}:7000", f"id-{name}")


def config(*names: str, epoch: int = 0) -> Config:
    return Config(epoch, tuple(member(n) for n in sorted(names)))


def majorities(config: Config) -> list[set[str]]:
    return [set(q) for q in itertools.combinations(config.names, config.quorum)]


def always_intersect(a: Config, b: Config) -> bool:
    return all(qa & qb for qa in majorities(a) for qb in majorities(b))


KEYS = [f"bucket/key-{i}" for i in range(3000)]


def test_the_quorum_is_a_majority_of_the_members() -> None:
    assert [config(*"abcdefg"[:n]).quorum for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


@given(st.integers(min_value=1, max_value=8))
def test_quorums_of_consecutive_steps_intersect(n: int) -> None:
    """Safety argument (1): one member added or removed, and every majority of the
    old member set meets every majority of the new one."""
    before = config(*[f"m{i}" for i in range(n)])
    grown = before.adding(member("new"))
    assert always_intersect(before, grown)
    if n > 1:
        shrunk = before.removing("m0")
        assert always_intersect(before, shrunk)


def test_quorums_two_steps_apart_need_not_intersect() -> None:
    """Why each step re-scans every key before the next: from 3 to 5 members, a
    majority of the first ({a, b}) and one of the last ({c, d, e}) share nothing."""
    three = config("a", "b", "c")
    five = three.adding(member("d")).settle().adding(member("e"))
    assert not always_intersect(three, five)
    assert {"a", "b"} in majorities(three) and {"c", "d", "e"} in majorities(five)


def test_every_key_has_one_home_among_the_members_and_homes_are_spread() -> None:
    c = config("a", "b", "c")
    homes = [c.home(k) for k in KEYS]
    assert set(homes) == {"a", "b", "c"}
    for name in "abc":
        assert 0.28 < homes.count(name) / len(KEYS) < 0.39, name
    assert homes == [c.home(k) for k in KEYS]  # the same answer every time


def test_homes_are_part_of_the_protocol() -> None:
    """The homes of fixed keys, as every version before this one computed them (the
    blake2b-64 of "name\0key", highest wins): during a rolling upgrade, members of two
    versions must agree on each key's home, or a key would have two ZERO proposers."""
    keys = ["default/a", "default/lock", "default/\u00fc", "b/" + "x" * 300, "default/k17",
            "default/leader"]
    assert [config("a", "b", "c").home(k) for k in keys] == ["b", "c", "b", "c", "c", "c"]
    five = config("n1", "n2", "n3", "n4", "n5")
    assert [five.home(k) for k in keys] == ["n4", "n5", "n3", "n3", "n3", "n4"]


def test_adding_a_member_moves_only_the_keys_it_wins() -> None:
    before = config("a", "b", "c")
    after = before.adding(member("d"))
    moved = [k for k in KEYS if before.home(k) != after.home(k)]
    assert moved and all(after.home(k) == "d" for k in moved)
    assert 0.2 < len(moved) / len(KEYS) < 0.3  # about a quarter: d's share


def test_removing_a_member_moves_only_its_keys() -> None:
    before = config("a", "b", "c", "d")
    after = before.removing("b")
    moved = [k for k in KEYS if before.home(k) != after.home(k)]
    assert moved == [k for k in KEYS if before.home(k) == "b"]


def test_homes_go_by_name_not_by_member_id() -> None:
    """A member replaced under its old name (a new member id) gets its old keys back."""
    before = config("a", "b", "c")
    replaced = Config(2, tuple(Member(m.name, m.url, m.member_id + "-new")
                               for m in before.members))
    assert [before.home(k) for k in KEYS[:300]] == [replaced.home(k) for k in KEYS[:300]]


def test_a_step_makes_the_next_epoch_unsettled_and_settling_keeps_the_epoch() -> None:
    c = config("a", "b", "c", epoch=4)
    grown = c.adding(member("d"))
    assert (grown.epoch, grown.settled, grown.names) == (5, False, ("a", "b", "c", "d"))
    assert grown.settle() == Config(5, grown.members, settled=True)
    shrunk = grown.settle().removing("a")
    assert (shrunk.epoch, shrunk.settled, shrunk.names) == (6, False, ("b", "c", "d"))


def test_zero_ballots_are_per_epoch_below_every_full_round_and_only_when_settled() -> None:
    """Safety argument (3): two epochs' homes never share a ZERO ballot, and no
    ZERO is used while a step's rescan runs."""
    assert config("a").zero() == ZERO == zero(0)
    later = config("a", epoch=3)
    assert later.zero() == zero(3) and zero(0) < zero(3) < Ballot(1, 0, "a")
    assert zero(3).is_zero and not Ballot(1, 0, "a").is_zero
    assert later.adding(member("b")).zero() is None
    assert later.adding(member("b")).settle().zero() == zero(4)


@pytest.mark.parametrize(("step", "message"), [
    (lambda c: c.adding(member("b")), "'b' is already a member"),
    (lambda c: c.adding(Member("x", "http://x", "id-a")), r"member id id-a is already in use "
                                                           r"\(by 'a'\)"),
    (lambda c: c.removing("zz"), "'zz' is not a member"),
    (lambda c: c.adding(member("x")).adding(member("y")), "a membership change is in progress"),
    (lambda c: c.adding(member("x")).removing("a"), "a membership change is in progress"),
])
def test_steps_that_must_not_be_taken_are_refused_with_the_reason(step: object,
                                                                  message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        step(config("a", "b", "c"))  # type: ignore[operator]


def test_a_step_in_progress_is_its_own_refusal() -> None:
    with pytest.raises(StepInProgress):
        config("a").adding(member("b")).removing("a")
    assert issubclass(StepInProgress, ConfigError)


def test_the_last_member_cannot_be_removed() -> None:
    with pytest.raises(ConfigError, match="'a' is the last member"):
        config("a").removing("a")


@pytest.mark.parametrize(("members", "message"), [
    ((), "at least one member"),
    ((member("b"), member("a")), "unique \\(and kept sorted\\)"),
    ((member("a"), member("a")), "unique \\(and kept sorted\\)"),
    ((member("a"), Member("b", "u", "id-a")), "member ids must be unique"),
])
def test_a_malformed_configuration_cannot_be_made(members: tuple[Member, ...],
                                                  message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(1, members)


def test_a_configuration_round_trips_through_json() -> None:
    c = config("a", "b", epoch=7).adding(member("c"))
    assert Config.from_json(c.to_json()) == c
    assert c.to_json()["members"][0] == {"name": "a", "url": "http://a:7000",
                                         "member_id": "id-a"}
