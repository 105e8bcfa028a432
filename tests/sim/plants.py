"""Bugs planted on purpose, to show that the simulator notices them.

- "forget-accepted": acceptors answer a prepare as if they had accepted
  nothing (patched into the real `Acceptor.handle`).
- "ack-before-durable": the disk acknowledges writes before they are durable,
  so a crash loses acknowledged writes (storage.AckBeforeDurable).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

from paxoskv.core.acceptor import Acceptor, Write
from paxoskv.core.messages import Promise, Reply, Request
from paxoskv.core.state import EMPTY

PLANTS = ("forget-accepted", "ack-before-durable")
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


@contextlib.contextmanager
def planted(name: str | None) -> Iterator[None]:
    """Patch the real code for plants that live there (the others are sim options)."""
    if name == "forget-accepted":
        with mock.patch.object(Acceptor, "handle", forgetful(Acceptor.handle)):
            yield
    else:
        yield
