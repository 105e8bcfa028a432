"""A deterministic simulator that runs the real node drivers.

Several real `Node`s, each with its real `Lifetimes` and `Liveness`, run in one
asyncio event loop on a virtual clock (loop.py), over an in-memory network
(network.py) and in-memory disks that crashes cut short (storage.py), on
skewed and drifting wall clocks (cluster.py), while random clients
(workload.py) record a history and a nemesis (nemesis.py) stalls, crashes,
restarts and partitions nodes. The history is checked by
tests/faults/checker.py plus checks.py. One seed fixes the whole run
(runner.py).

    .venv/bin/python -m tests.sim --seeds 1-2000            # failing seeds only
    .venv/bin/python -m tests.sim --seed 17 --verbose       # schedule and history
    .venv/bin/python -m tests.sim --seeds 1-50 --plant forget-accepted
    PAXOSKV_SIM_SEEDS=200 .venv/bin/pytest tests/test_sim.py

What it does not model: a majority of bad clocks (the deadline guarantee
assumes a majority keeps time), wiped disks, membership changes, and the HTTP
and WebSocket layers themselves (clients call the node objects as the HTTP
handlers do; links have PeerLink's surface and failure behaviour).
"""
