"""A deterministic simulator that runs the real node drivers.

Several real `Node`s, each with its real `Lifetimes` and `Liveness`, run in one
asyncio event loop on a virtual clock (loop.py), over an in-memory network
(network.py) and in-memory disks that crashes cut short (storage.py), on
skewed and drifting wall clocks (cluster.py), while random clients
(workload.py) record a history and a nemesis (nemesis.py) stalls, crashes,
restarts, wipes and partitions nodes. The history is checked by
tests/faults/checker.py plus checks.py. One seed fixes the whole run
(runner.py). A wiped member's restart is decided by the real
`identity.decide` (cluster.py): it is refused and stays down.

    .venv/bin/python -m tests.sim --seeds 1-2000            # failing seeds only
    .venv/bin/python -m tests.sim --seed 17 --verbose       # schedule and history
    .venv/bin/python -m tests.sim --seeds 1-50 --plant forget-accepted
    .venv/bin/python -m tests.sim --seeds 1-300 --plant renew-backwards --first
    .venv/bin/python -m tests.sim --seeds 1-100 --scenario slow-home
    PAXOSKV_SIM_SEEDS=200 .venv/bin/pytest tests/test_sim.py

Planted bugs (plants.py) include each safety fix of issue 8 reverted; a plant
runs in the scenario (nemesis.py) that leans towards its violation's schedule.
tests/test_regressions.py drives the same real drivers through each
violation's schedule, scripted.

What it does not model: a majority of bad clocks (the deadline guarantee
assumes a majority keeps time), membership changes, and the HTTP and WebSocket
layers themselves (clients call the node objects as the HTTP handlers do;
links have PeerLink's surface and failure behaviour; the identity exchange of
a restart on a wiped disk asks the peers that are up, not over HTTP).
"""
