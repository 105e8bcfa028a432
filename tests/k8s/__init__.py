"""The local Kubernetes test cluster (issue 10): its binaries (build), its images (images)."""
