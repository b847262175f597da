"""The rendered overlays, once per session for every test of tests/deployments/."""

from __future__ import annotations

import pytest

from tests.deployments.manifests import OVERLAYS, Manifest, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}
