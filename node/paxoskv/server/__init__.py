"""The node's I/O layers around the pure core: storage, peer transport, HTTP."""
