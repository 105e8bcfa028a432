from tests.sim.runner import entry

entry()
