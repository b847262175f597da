"""Fixtures shared by the adapter tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def example_inventory() -> Path:
    """The shipped example inventory (read it, never write it)."""
    return REPO_ROOT / "examples" / "ocloud.yaml"


@pytest.fixture
def inventory_copy(tmp_path: Path, example_inventory: Path) -> Path:
    """A private, editable copy of the example inventory."""
    copy = tmp_path / "ocloud.yaml"
    shutil.copyfile(example_inventory, copy)
    return copy


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
