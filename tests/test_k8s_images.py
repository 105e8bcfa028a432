"""The image build (`python -m tests.k8s.images`) with a prerequisite missing: it stops at
once with one line naming what is missing, and leaves no archive, whole or half-built. No
cluster, no build: each case stops before the first step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s import images

REPO = Path(__file__).resolve().parents[1]


def build(cache: Path, cwd: Path = REPO, path: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path if path is not None else os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-m", "tests.k8s.images", "--cache", str(cache)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def nothing_built(cache: Path) -> None:
    archives = list(cache.glob("images/*")) + list(cache.glob("images/.*"))
    assert archives == [], archives
    assert not (cache / "work" / "rootfs").exists()


def test_a_checkout_without_its_dockerfile_or_sources_is_named_before_building(
        tmp_path: Path) -> None:
    copy = tmp_path / "checkout"
    (copy / "tests" / "k8s").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "__init__.py", copy / "tests")
    for module in (REPO / "tests" / "k8s").glob("*.py"):
        shutil.copy(module, copy / "tests" / "k8s")
    for source in images.source_files(REPO):
        relative = source.relative_to(REPO)
        if relative.as_posix() != "Dockerfile":
            (copy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, copy / relative)
    cache = tmp_path / "cache"
    line = error_line(build(cache, cwd=copy))
    assert line == (f"k8s-build: error: {copy} is not a complete checkout: Dockerfile not "
                    "found (the image build needs them)")
    nothing_built(cache)
    shutil.rmtree(copy / images.SOURCE_TREES[0])
    line = error_line(build(cache, cwd=copy))
    assert line == (f"k8s-build: error: {copy} is not a complete checkout: Dockerfile, "
                    f"{images.SOURCE_TREES[0]}/ not found (the image build needs them)")
    nothing_built(cache)


@pytest.mark.skipif(os.geteuid() != 0, reason="as another user the build stops at root")
@pytest.mark.parametrize("present", [(), ("debootstrap",)])
def test_a_tool_missing_from_the_path_is_named(tmp_path: Path, present: tuple[str, ...]
                                               ) -> None:
    # Only dpkg-query on the PATH, which says every package is installed: nothing to
    # install, and the commands are still not found.
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, script in [("dpkg-query", "printf installed"), *((p, "exit 1") for p in present)]:
        (tools / name).write_text(f"#!/bin/sh\n{script}\n")
        (tools / name).chmod(0o755)
    cache = tmp_path / "cache"
    line = error_line(build(cache, path=str(tools)))
    missing = [tool for tool in ("debootstrap", "buildah") if tool not in present]
    packages = ("packages debootstrap, buildah are" if len(missing) > 1 else
                "package buildah is")
    assert line == (f"k8s-build: error: missing prerequisite: {', '.join(missing)} not found "
                    f"on the PATH ({tools}), though the Debian {packages} installed")
    nothing_built(cache)
