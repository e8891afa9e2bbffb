"""Shared helpers of the one-shot tests: a reference image, tiny recipes, a private cache folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own reference-latent cache (``$ZSGM_CACHE``)."""
    folder = tmp_path / "zsgm-cache"
    monkeypatch.setenv("ZSGM_CACHE", str(folder))
    return folder


@pytest.fixture
def reference(tmp_path) -> str:
    """A 40 x 48 RGB reference image (any size: it is squashed to the generator's)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    arr = np.stack([255 * xx / 48, 255 * yy / 40, rng.integers(0, 256, (40, 48))], axis=-1).astype(np.uint8)
    path = tmp_path / "reference.png"
    Image.fromarray(arr).save(path)
    return str(path)

