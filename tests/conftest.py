from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import LocalCluster, running


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 3)


@pytest.fixture
def cluster5(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from running(tmp_path, 5)
