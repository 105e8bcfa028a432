"""How a proposer announces a decision (rounds._Attempt._announce), on the simulator.

Every acceptor must learn that a state was chosen (local reads serve only chosen
states, and a member that missed the accept catches up), at the lowest cost: a
bare mark to each acceptor that accepted, the state only to one that did not.
With quorum 2 of 3 the third acceptor's answer is usually still on its way at
the decision; it gets a bare mark when it comes, or the state once the round's
attempt timeout has passed without it.
"""

from __future__ import annotations

from typing import Any

from paxoskv.core.messages import Accept, Commit
from paxoskv.core.state import KeyState
from tests.test_regressions import BUCKET, World, key_homed_on

Sent = list[tuple[str, str, Any]]


def _watch(w: World, sent: Sent, lose_accepts_to: str | None = None) -> None:
    """Record what n1 sends; lose its accepts to `lose_accepts_to`."""

    def rule(src: str, dst: str, body: Any) -> bool:
        if src == "n1":
            sent.append((dst, type(body).__name__, body))
        return src == "n1" and dst == lose_accepts_to and isinstance(body, Accept)

    w.lose(rule)


def _local(w: World, name: str, key: str) -> KeyState:
    return w.node(name).read_local(f"{BUCKET}/{key}")


def test_acceptors_that_accept_get_a_bare_mark_and_no_one_gets_the_state() -> None:
    key = key_homed_on("n1")
    sent: Sent = []
    seen: dict[str, Any] = {}

    async def schedule(w: World) -> None:
        _watch(w, sent)
        await w.put("n1", key, "v")
        await w.at(w.loop.time() + 0.1)  # the third answer and the marks have arrived
        seen.update({name: _local(w, name, key).value for name in ("n1", "n2", "n3")})

    assert World().run(schedule) == []
    marks = sorted(dst for dst, kind, body in sent if kind == "list" and body[0].endswith(key))
    assert marks == ["n2", "n3"], sent
    assert not [body for _, _, body in sent if isinstance(body, Commit)], sent
    assert seen == {"n1": "v", "n2": "v", "n3": "v"}


def test_an_acceptor_that_never_answers_gets_the_state_after_the_attempt_timeout() -> None:
    key = key_homed_on("n1")
    sent: Sent = []
    seen: list[Any] = []

    async def schedule(w: World) -> None:
        _watch(w, sent, lose_accepts_to="n3")
        await w.put("n1", key, "v")
        decided = w.loop.time()
        timeout = w.node("n1").attempt_timeout
        await w.at(decided + timeout / 2)
        seen.append(_local(w, "n3", key).value)  # not caught up yet: nothing chosen here
        await w.at(decided + timeout + 0.1)
        seen.append(_local(w, "n3", key).value)

    assert World().run(schedule) == []
    catch_ups = [dst for dst, _, body in sent if isinstance(body, Commit) and body.state]
    assert catch_ups == ["n3"], sent
    assert seen == [None, "v"]
