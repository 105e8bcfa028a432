"""Each rule of the fault checker catches on its own (issue 14).

A rule is one place in tests/faults/checker.py that reports an anomaly: one
message. For each rule, RULES holds a planted history that breaks that rule and
no other, so the checker reports it with that rule's message alone. Then, for
each rule, a mutant of the checker with just that rule switched off (its
`anomalies.append(...)` removed, built here from the checker's own source)
passes that rule's history and judges every other rule's history exactly as
the real checker does: the mutant is caught by its rule's history alone.

And product bugs planted in the simulator (tests/sim/plants.py) that a seed
shows by one rule alone: with that rule switched off, the seed checks clean.
"""

from __future__ import annotations

import ast
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import pytest

import tests.faults.checker as real
from tests.faults.checker import Op, SessionLog
from tests.sim import runner
from tests.test_checker import delete, get, put, swap


@dataclass(frozen=True)
class Rule:
    name: str
    message: str  # a fragment of the rule's anomaly message, found in no other rule's


@dataclass(frozen=True)
class Case:
    rule: Rule
    name: str
    run: Callable[[ModuleType], list[str]]  # the anomalies a checker module reports


PARITY = Rule("live and tombstone tokens match found", "odd tokens are live, even ones tombstones")
ONE_VALUE = Rule("one value per generation", "decided twice")
FROM_NOWHERE = Rule("nothing from nowhere or the future", "could have created")
CHAIN = Rule("no gap in the generation chain", "could have ended generation")
DELETE_ANSWER = Rule("a delete's answer agrees with itself", "answered deleted=")
REAL_TIME = Rule("no acknowledged put or delete lost", "acknowledged state lost")
LIFETIME = Rule("no key gone while its bindings live", "while its bindings lived")
SESSION_EARLY = Rule("no session found gone while it surely lived", "but it surely lived until")
SESSION_BACK = Rule("no session renewed once found gone", "then renewed by a keep-alive")
SWAPPED_TRUE = Rule("a swap that took effect answers what it decided",
                    "not the generation it decided")
SWAPPED_FALSE = Rule("a swap answered swapped=false decided nothing",
                     "answered swapped=false, yet")
SWAP_OF_DEAD = Rule("a swap follows a live generation", "which was not live")
SWAP_EXPECTED = Rule("a swap follows the value it expected", "which held")
SWAP_TOKEN = Rule("a swap follows the token it required", "required token")
ALL_RULES = [PARITY, ONE_VALUE, FROM_NOWHERE, CHAIN, DELETE_ANSWER, REAL_TIME, LIFETIME,
             SESSION_EARLY, SESSION_BACK, SWAPPED_TRUE, SWAPPED_FALSE, SWAP_OF_DEAD,
             SWAP_EXPECTED, SWAP_TOKEN]


def _keys(history: list[Op], bindings_end_keys: bool = False,
          sessions_alive_until: dict[str, float] | None = None
          ) -> Callable[[ModuleType], list[str]]:
    def run(checker: ModuleType) -> list[str]:
        report = checker.check(history, bindings_end_keys=bindings_end_keys,
                               sessions_alive_until=sessions_alive_until)
        return list(report.anomalies)
    return run


def _sessions(logs: list[SessionLog], alive_until: float
              ) -> Callable[[ModuleType], list[str]]:
    def run(checker: ModuleType) -> list[str]:
        found = checker.sessions_live_while_promised({log.id: log for log in logs},
                                                     {log.id: alive_until for log in logs})
        return list(found)
    return run


# Each history is otherwise correct: every token seen has its creator, every
# tombstone its delete, and nothing acknowledged goes back.
CASES = [
    Case(PARITY, "a found=False answer with a live token",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), get(2, 2.0, 3.0, None, 1)])),
    Case(PARITY, "a found=True answer with a tombstone token",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
                Op(2, "get", "k", 4.0, 5.0, "ok", found=True, seen_value="a", token=2)])),
    Case(ONE_VALUE, "two puts both won generation 1",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), put(2, 0.0, 1.0, "b", "b", 1)])),
    Case(FROM_NOWHERE, "a value nobody put",
         _keys([get(1, 0.0, 1.0, "ghost", 1)])),
    Case(FROM_NOWHERE, "a value read before its put was invoked",
         _keys([get(1, 0.0, 1.0, "a", 1), put(2, 2.0, 3.0, "a", "a", 1)])),
    Case(CHAIN, "generation 1 ended with no delete, under a later put",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), put(2, 2.0, 3.0, "b", "b", 3)])),
    Case(DELETE_ANSWER, "deleted=True, yet generation 1 still live",
         _keys([put(1, 0.0, 1.0, "a", "a", 1),
                Op(2, "delete", "k", 1.5, 1.6, "ok", token_arg=1, token=1, found=True,
                   seen_value="a", deleted=True)])),
    Case(REAL_TIME, "an acknowledged put gone",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), get(2, 2.0, 2.1, None, 0)])),
    Case(REAL_TIME, "a deleted value back",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
                get(2, 4.0, 5.0, "a", 1)])),
    Case(LIFETIME, "a key gone before its deadline",
         _keys([put(1, 0.0, 1.0, "a", "a", 1, until=10_000), get(2, 5.0, 6.0, None, 2)],
               bindings_end_keys=True)),
    Case(LIFETIME, "a key gone while its session lived",
         _keys([put(1, 0.0, 1.0, "a", "a", 1, session="s1"), get(2, 5.0, 6.0, None, 2)],
               bindings_end_keys=True, sessions_alive_until={"s1": 8.0})),
    Case(SWAPPED_TRUE, "swapped=true answering the generation it swapped from",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), swap(2, 2.0, 3.0, "a", "b", "a", 1)])),
    Case(SWAPPED_FALSE, "swapped=false, yet its value decided",
         _keys([put(1, 0.0, 1.0, "a", "a", 1),
                swap(2, 2.0, 3.0, "a", "b", "b", 2, swapped=False)])),
    Case(SWAP_OF_DEAD, "a swap decided after a delete",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
                Op(2, "swap", "k", 4.0, math.inf, "unknown", value="b", expected="a"),
                get(3, 5.0, 6.0, "b", 3)])),
    Case(SWAP_EXPECTED, "a swap from another value than the one held",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), swap(2, 2.0, 3.0, "x", "b", "b", 2)])),
    Case(SWAP_TOKEN, "a swap from another generation than the one it required",
         _keys([put(1, 0.0, 1.0, "a", "a", 1), delete(1, 2.0, 3.0, 1, 2),
                put(1, 4.0, 5.0, "c", "c", 3),
                swap(2, 6.0, 7.0, "c", "b", "b", 4, token_arg=1)])),
    Case(SESSION_EARLY, "a keep-alive found the session gone while it surely lived",
         _sessions([SessionLog("s1", 3000, 13_000,
                               keep_alives=[(1.0, 1.1, 4_000), (3.0, 3.1, None)])], 4.0)),
    Case(SESSION_BACK, "a keep-alive renewed the session after one found it gone",
         _sessions([SessionLog("s1", 3000, 13_000,
                               keep_alives=[(9.0, 9.1, None), (9.5, 9.6, 12_500)])], 4.0)),
]


def _message_parts(call: ast.Call) -> str:
    """The literal text of an `anomalies.append(f"...")` call, "{}" for each field."""
    text = []
    for arg in call.args:
        for part in arg.values if isinstance(arg, ast.JoinedStr) else [arg]:
            text.append(part.value if isinstance(part, ast.Constant)
                        and isinstance(part.value, str) else "{}")
    return "".join(text)


def _append_call(node: ast.AST) -> ast.Call | None:
    if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr == "append"
            and isinstance(node.value.func.value, ast.Name)
            and node.value.func.value.id == "anomalies"):
        return node.value
    return None


def _checker_source() -> ast.Module:
    return ast.parse(inspect.getsource(real))


def _without(rule: Rule) -> ModuleType:
    """The checker with `rule`'s report removed: its `anomalies.append` becomes `pass`."""
    tree = _checker_source()
    removed = []

    class Disable(ast.NodeTransformer):
        def visit_Expr(self, node: ast.Expr) -> ast.AST:
            call = _append_call(node)
            if call is not None and rule.message in _message_parts(call):
                removed.append(node.lineno)
                return ast.copy_location(ast.Pass(), node)
            return node

    tree = ast.fix_missing_locations(Disable().visit(tree))
    assert len(removed) == 1, (rule, removed)
    name = f"tests.faults.checker_without_rule_{ALL_RULES.index(rule)}"
    module = ModuleType(name)
    module.__file__ = real.__file__
    sys.modules[name] = module  # dataclasses look their module up while building
    try:
        exec(compile(tree, real.__file__ or "checker.py", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


def test_every_report_in_the_checker_is_one_rule() -> None:
    """Each `anomalies.append` in the checker carries exactly one rule's message."""
    sites = [_message_parts(call) for node in ast.walk(_checker_source())
             if (call := _append_call(node)) is not None]
    assert len(sites) == len(ALL_RULES), sites
    for site in sites:
        assert [r.name for r in ALL_RULES if r.message in site] != [], site
        assert len([r for r in ALL_RULES if r.message in site]) == 1, site
    assert {c.rule for c in CASES} == set(ALL_RULES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_planted_history_breaks_its_rule_alone(case: Case) -> None:
    anomalies = case.run(real)
    assert anomalies, case.name
    for anomaly in anomalies:
        assert case.rule.message in anomaly, anomaly
        others = [r.name for r in ALL_RULES if r != case.rule and r.message in anomaly]
        assert others == [], anomaly


@pytest.mark.parametrize("rule", ALL_RULES, ids=[r.name for r in ALL_RULES])
def test_a_checker_without_one_rule_is_caught_by_that_rules_histories_alone(rule: Rule) -> None:
    mutant = _without(rule)
    for case in CASES:
        if case.rule == rule:
            assert case.run(mutant) == [], f"{case.name}: still reported without {rule.name}"
        else:
            assert case.run(mutant) == case.run(real), case.name



# (plant, rule): a planted bug that a seed of its plant's scenario (a run is well under
# a second) reports by that rule's message alone. The seed is searched for, not fixed,
# so that a change of the simulator's schedules cannot quietly void the test.
PLANTED = [("delete-drops-guard", LIFETIME),  # a key ended before its deadline
           ("renew-backwards", SESSION_EARLY),  # a renewal moved a deadline back
           ("ack-before-durable", REAL_TIME)]  # a crash lost acknowledged writes
# (forget-accepted, promises that forget what was accepted, usually breaks several
# rules at once, so no seed need show it by one rule alone: tests/test_sim.py shows
# that random seeds find it.)
SEEDS_TO_SEARCH = range(1, 81)


def _caught_by_alone(result: runner.Result, rule: Rule) -> bool:
    return bool(result.anomalies) and not result.problems and all(
        rule.message in anomaly and not any(r.message in anomaly for r in ALL_RULES if r != rule)
        for anomaly in result.anomalies)


@pytest.mark.parametrize(("plant", "rule"), PLANTED, ids=[plant for plant, _ in PLANTED])
def test_a_planted_bug_is_caught_by_one_rule_alone(plant: str, rule: Rule,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    found = next((result for seed in SEEDS_TO_SEARCH
                  if _caught_by_alone(result := runner.run_seed(seed, plant=plant), rule)),
                 None)
    assert found is not None, (f"no seed in {SEEDS_TO_SEARCH} shows {plant} by "
                               f"{rule.name} alone")
    mutant = _without(rule)
    monkeypatch.setattr(runner, "check", mutant.check)
    monkeypatch.setattr(runner, "sessions_live_while_promised",
                        mutant.sessions_live_while_promised)
    missed = runner.run_seed(found.seed, plant=plant)
    assert missed.anomalies == [] and missed.problems == [], missed.replay()
