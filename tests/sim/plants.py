"""Bugs planted on purpose, to show that the simulator notices them.

Each plant is applied by patching the real code for the length of a run (never
a switch in the product). The first two break basic durability; the other five
each revert one of the safety fixes of issue 8, to show that random seeds find
the violation that fix prevents:

- "forget-accepted": acceptors answer a prepare as if they had accepted
  nothing (patched into the real `Acceptor.handle`).
- "ack-before-durable": the disk acknowledges writes before they are durable,
  so a crash loses acknowledged writes (storage.AckBeforeDurable).
- "ballot-from-acceptor" (fix 1 reverted): a full round takes its ballot from
  the local acceptor's promise and every next promise is the ballot's round
  plus one, as `Node._proposal` did at 6056439; the local acceptor records
  nothing when it answers TooEarly, so a ballot can be used twice.
- "put-runs-twice" (fix 2 reverted): puts carry no id, so a put that runs at
  the home and again as a hedge (or after the home resumes) can take effect
  twice.
- "wiped-votes" (fix 3 reverted): a member restarted on a wiped disk is not
  refused (cluster.py): it votes with a fresh acceptor and boot 1 (amnesia).
- "delete-drops-guard" (fix 4 reverted): a change does not carry forward the
  NOT_BEFORE guard of the state it builds on (`state.step` is plain `apply`),
  so a delete or an expiry built on a not-yet-chosen deadline tombstone can
  end a key before a majority of clocks reached its deadline.
- "renew-backwards" (fix 5 reverted): a renewal sets the deadline even if it
  moves it back.

And one that takes the generation out of a compare-and-swap (issue 13):
- "swap-any-generation": `SwapIf` replaces whatever generation is live, so a run
  of a swap that lands after another change (hedged, duplicated, late) applies
  again, on a value it never compared.

And one that takes the id out of a delete (found by a fault run, issue 8):
- "delete-runs-twice": a delete that ran behind the key (naming a generation not
  made yet) is not remembered, so a later run of it (hedged, duplicated, held by a
  stalled home) ends that generation after the delete answered "not deleted".

And three that take out a part of membership change (issue 9), found in the
membership scenarios:
- "skip-rescan": a step settles without re-deciding the keys under its epoch;
- "no-fencing": acceptors take requests of older epochs;
- "ballots-by-name": ballots and put ids carry the member's name instead of its
  member id, so a member replaced under its old name reuses its predecessor's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

from paxoskv.core import state as core_state
from paxoskv.core.acceptor import Acceptor, Write
from paxoskv.core.ballot import Ballot, first_ballot
from paxoskv.core.messages import Promise, Reply, Request
from paxoskv.core.proposer import Ballots, Plan
from paxoskv.core.state import EMPTY, UNTIL, Change, DeleteIf, KeyState, Renew, SwapIf
from paxoskv.server.membership import Membership
from paxoskv.server.node import Node

PLANTS = ("forget-accepted", "ack-before-durable", "ballot-from-acceptor", "put-runs-twice",
          "wiped-votes", "delete-drops-guard", "renew-backwards", "skip-rescan", "no-fencing",
          "ballots-by-name", "swap-any-generation", "delete-runs-twice")
Handle = Callable[[Acceptor, Request, Any], tuple[Reply, Write | None]]


def forgetful(handle: Handle) -> Handle:
    """`Acceptor.handle`, but promises forget the accepted state."""

    def forgetful_handle(self: Acceptor, msg: Request, now_ms: Any = None
                         ) -> tuple[Reply, Write | None]:
        reply, write = handle(self, msg, now_ms)
        if isinstance(reply, Promise):
            reply = Promise(reply.key, reply.ballot, None, EMPTY)
        return reply, write

    return forgetful_handle


def plan_from_acceptor(self: Ballots, key: str, *, zero: Ballot | None, known_key: bool,
                       above: Ballot | None, hint: Ballot | None = None) -> Plan:
    """`Ballots.plan` as the driver chose ballots at 6056439: a full round starts
    just above the local acceptor's promise (`hint`) or the conflict's (`above`),
    and the next promise is always the ballot's round plus one."""

    def make(path: str, ballot: Ballot, prepared: KeyState | None) -> Plan:
        return Plan(path, ballot, prepared, Ballot(ballot.round + 1, self.boot, self.node))

    cached = self._cached.pop(key, None)
    if cached is not None and above is None:
        return make("cached", *cached)
    if above is None and zero is not None and not known_key:
        return make("zero", zero, EMPTY)
    promised = hint
    if promised is None or (above is not None and above > promised):
        promised = above
    return make("full", first_ballot(self.node, self.boot, promised), None)


class NotAPut:
    """Stands in for PutIfAbsent in node.py's namespace, so that `Node.change`'s
    `isinstance(change, PutIfAbsent)` is never true: puts go out without an id."""


def unguarded_step(change: Change, state: KeyState) -> KeyState:
    """`state.step` without carrying the NOT_BEFORE guard forward (6056439).
    (`DeleteIf.apply` itself already drops the bindings of the generation it
    ends, as it did then: the fix lives in `step`.)"""
    return change.apply(state)


def renew_backwards(self: Renew, state: KeyState) -> KeyState:
    """`Renew.apply` as at 6056439: the deadline is set, even if that moves it back."""
    if not state.live or state.token != self.token:
        return state
    return state._replace(bindings={**state.bindings, UNTIL: self.until})


def swap_any_generation(self: SwapIf, state: KeyState) -> KeyState:
    """`SwapIf.apply`, but on whatever generation is live: a replayable change."""
    if not state.live:
        return state
    swapped = state._replace(token=state.token + 1, value=self.value)
    return core_state.remember(swapped, (self.id, self.expires, swapped.token, True))


def delete_without_memory(apply: Callable[[DeleteIf, KeyState], KeyState]
                          ) -> Callable[[DeleteIf, KeyState], KeyState]:
    """`DeleteIf.apply` as before it had an id: a run behind the key is not remembered
    (nor is a repeat known), so a later run may end the generation it named."""

    def forgetful_apply(self: DeleteIf, state: KeyState) -> KeyState:
        return apply(dataclasses.replace(self, id=""), state)

    return forgetful_apply


async def no_rescan(self: Membership, holders: list[str]) -> list[str]:
    """`Membership._rescan` skipped: a step settles without re-deciding any key."""
    return []


def unfenced(handle: Handle) -> Handle:
    """`Acceptor.handle`, but every request counts as of the acceptor's own epoch."""

    def unfenced_handle(self: Acceptor, msg: Request, now_ms: Any = None
                        ) -> tuple[Reply, Write | None]:
        epoch = max(self.epoch, self.record(msg.key).epoch)
        return handle(self, dataclasses.replace(msg, epoch=epoch), now_ms)

    return unfenced_handle


def ballots_by_name(node: Node) -> None:
    """Ballots and put ids carry the member's name, not its member id (as before the
    member replaced under its old name): its predecessor's are used again."""
    node.member_id = node.name
    node.ballots = Ballots(node.name, node.boot)


@contextlib.contextmanager
def planted(name: str | None) -> Iterator[None]:
    """Patch the real code for plants that live there (the others are sim options:
    "ack-before-durable" in storage.py, "wiped-votes" in cluster.py)."""
    with contextlib.ExitStack() as stack:
        if name == "forget-accepted":
            stack.enter_context(mock.patch.object(Acceptor, "handle",
                                                  forgetful(Acceptor.handle)))
        elif name == "ballot-from-acceptor":
            stack.enter_context(mock.patch.object(Ballots, "plan", plan_from_acceptor))
        elif name == "put-runs-twice":
            stack.enter_context(mock.patch("paxoskv.server.node.PutIfAbsent", NotAPut))
        elif name == "delete-drops-guard":
            stack.enter_context(mock.patch.object(core_state, "step", unguarded_step))
        elif name == "renew-backwards":
            stack.enter_context(mock.patch.object(Renew, "apply", renew_backwards))
        elif name == "swap-any-generation":
            stack.enter_context(mock.patch.object(SwapIf, "apply", swap_any_generation))
        elif name == "delete-runs-twice":
            stack.enter_context(mock.patch.object(DeleteIf, "apply",
                                                  delete_without_memory(DeleteIf.apply)))
        elif name == "skip-rescan":
            stack.enter_context(mock.patch.object(Membership, "_rescan", no_rescan))
        elif name == "no-fencing":
            stack.enter_context(mock.patch.object(Acceptor, "handle",
                                                  unfenced(Acceptor.handle)))
        elif name == "ballots-by-name":
            post_init = Node.__post_init__

            def by_name(node: Node) -> None:
                post_init(node)
                ballots_by_name(node)

            stack.enter_context(mock.patch.object(Node, "__post_init__", by_name))
        yield
