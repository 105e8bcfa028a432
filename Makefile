# Every target installs what it needs first, so each works on a fresh machine.
VENV   := .venv
BIN    := $(VENV)/bin
PYTHON ?= python3

.PHONY: install system-deps run test lint bench bench-ab torture mutants clean k8s-up k8s-down k8s-images k8s-operator deploy kind-e2e

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# `make run` installs first if needed, saying so and ticking while pip works (it is quiet
# otherwise, ~15 s); the banner's commands then name .venv/bin/paxoskv unless the venv
# is on the PATH. A node that dies is restarted after 10 s; Ctrl-C stops them all.
run:  ## a local 3-node cluster on 127.0.0.1:7001-7003 (Ctrl-C stops it)
	@if ! $(MAKE) --no-print-directory --question install 2>/dev/null; then \
	  printf 'make run: installing PaxosKV and its dependencies into %s (about 15 s the first time) ' '$(VENV)'; \
	  start=$$(date +%s); \
	  ( while sleep 1 && kill -0 $$$$ 2>/dev/null; do printf .; done ) & ticker=$$!; \
	  $(MAKE) --no-print-directory --silent install; status=$$?; \
	  kill $$ticker 2>/dev/null; wait $$ticker 2>/dev/null; \
	  if [ $$status -ne 0 ]; then echo; echo 'make run: installing failed'; exit $$status; fi; \
	  echo " done in $$(( $$(date +%s) - start )) s"; \
	fi
	@$(BIN)/paxoskv dev

# The fault tests partition nodes with nftables inside a network namespace (iproute2),
# and cut power to an ext4 image, loop-mounted in a private mount namespace (e2fsprogs,
# util-linux's mount, unshare and losetup).
system-deps:
	@for tool in nft ip mkfs.ext4 unshare losetup mount; do command -v $$tool >/dev/null \
	  || missing=1; done; [ -z "$$missing" ] || (apt-get update -qq && \
	  apt-get install -y -qq nftables iproute2 e2fsprogs util-linux mount)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint system-deps  ## lint, type-check, then every test
	$(BIN)/pytest

SIM_SEEDS ?= 100000

torture: install system-deps  ## long runs: fault runs of 200 s, 100,000 simulator seeds, a long property run
	PAXOSKV_FAULT_SECONDS=200 $(BIN)/pytest tests/test_faults.py -s -o timeout=900
	PAXOSKV_PROPERTY_EXAMPLES=20000 $(BIN)/pytest tests/test_core_properties.py -q
	@# the simulator's seeds, split over both cores; each half prints its failing seeds
	$(BIN)/python -m tests.sim --seeds 1-$$(( $(SIM_SEEDS) / 2 )) & first=$$!; \
	  $(BIN)/python -m tests.sim --seeds $$(( $(SIM_SEEDS) / 2 + 1 ))-$(SIM_SEEDS); second=$$?; \
	  wait $$first && [ $$second -eq 0 ]
	@# membership change: both scenarios, one per core
	$(BIN)/python -m tests.sim --scenario grow-shrink --seeds 1-$$(( $(SIM_SEEDS) / 10 )) & first=$$!; \
	  $(BIN)/python -m tests.sim --scenario from-one --seeds 1-$$(( $(SIM_SEEDS) / 10 )); second=$$?; \
	  wait $$first && [ $$second -eq 0 ]

mutants: install  ## mutation testing of the core, storage and checker; writes tests/mutants/report.md
	$(BIN)/python -m tests.mutants

bench: install  ## PaxosKV vs etcd on this machine; writes the figures into README.md
	$(BIN)/python bench/run.py

REV ?= HEAD
bench-ab: install  ## put throughput of this tree against git revision REV (default HEAD)
	$(BIN)/python bench/ab.py $(REV)

# A local single-node Kubernetes 1.20.2, "kind without Docker" (root, Debian, cgroup v1):
# the binaries are built once from Debian's sources (about 9 minutes), then cached in
# /var/cache/paxoskv-k8s; the cluster lives in its own network namespace (tests/k8s/).
k8s-up: install  ## start the local Kubernetes cluster (DNS and volume stand-ins included); prints how to reach it
	$(BIN)/python -m tests.k8s.build
	$(BIN)/python -m tests.k8s.cluster up

k8s-down: install  ## stop it and check the machine is as it was
	$(BIN)/python -m tests.k8s.cluster down

k8s-images: install  ## build the PaxosKV image (debootstrap + buildah) and load it into the cluster
	$(BIN)/python -m tests.k8s.images
	$(BIN)/python -c 'from tests.k8s import cluster, images; \
	  print(*cluster.load_image(images.ensure_images().archives["paxoskv"]))'

k8s-operator: install  ## install the CRD and the operator (of the local image) into the local cluster
	$(BIN)/python -c 'import json; from tests.k8s import cluster, images; \
	  from paxoskv_operator import install; built = images.ensure_images(); \
	  cluster.load_image(built.archives["paxoskv"]); items = [install.crd(), \
	  *install.objects(built.reference)]; cluster.info().kubectl_run("apply", "-f", "-", \
	  check=True, text=True, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))'

deploy: install  ## rewrite deploy/paxoskv.yaml (the CRD and the operator) from crds/ and operator/
	$(BIN)/python -m paxoskv_operator.install > deploy/paxoskv.yaml

# The same Kubernetes tests on kind, for users with Docker, kind and kubectl (it cannot run
# on the machines this project is developed on: no Docker daemon). Creates the kind cluster
# paxoskv-e2e (Kubernetes 1.29.2), builds the Dockerfile with docker build, loads the image
# with kind load docker-image, runs `pytest -m k8s tests` on it, deletes the cluster.
# KIND_ARGS passes options: --keep, --name, --node-image, --image, -- <pytest args>.
kind-e2e: install  ## the Kubernetes tests on a kind cluster (needs Docker, kind, kubectl)
	$(BIN)/python -m tests.k8s.kind $(KIND_ARGS)

clean:
	rm -rf $(VENV) .paxoskv-dev .pytest_cache .mypy_cache .ruff_cache .hypothesis
