"""The consensus core: pure state machines, no sockets, disks or clocks.

Messages go in, replies and storage writes come out. The server layer
(`paxoskv.server`) moves the messages and makes the writes durable before any
reply leaves the node ("persist before you send").
"""
