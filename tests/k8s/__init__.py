"""The local Kubernetes test cluster: building its binaries (build.py)."""
