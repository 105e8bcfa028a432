"""PaxosKV: a strongly consistent, leaderless key-value store for coordination."""

__version__ = "0.1.0"
