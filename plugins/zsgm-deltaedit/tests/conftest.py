"""Fixtures of the DeltaEdit tests: a 16-px generator (5 style layers of 8 channels) and the tiny CLIP."""

from __future__ import annotations

import pytest

from zsgm.clip import tiny_random_clip

from deltaedit_tiny import TINY_RECIPE, make_tiny_generator


@pytest.fixture
def tiny_generator():
    return make_tiny_generator()


@pytest.fixture(scope="session")
def tiny_clip():
    return tiny_random_clip(preprocess="deltaedit")

