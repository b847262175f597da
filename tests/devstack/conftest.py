"""What the devstack tests share."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from devstack.stack import StackConfig


def make_run_config(tmp_path: Path, **environ: str) -> StackConfig:
    """`make run`'s configuration from `environ`, over an empty inventory, with its own
    state directory (no running stack of this checkout is looked at)."""
    inventory = tmp_path / "ocloud.yaml"
    inventory.write_text("{}\n")
    base = StackConfig.from_env({"NETWEAVE_INVENTORY": str(inventory), **environ})
    return replace(base, state_dir=tmp_path / "state")
