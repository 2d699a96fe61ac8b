"""The MMSegmentation 1.2.2 oracle of tests/fidelity, for checkpoints MMSeg's own models save."""

from __future__ import annotations

import os

import pytest
from fidelity.conftest import INSTALL, MMSeg

from perf.mmcv_lite import register_stand_in


@pytest.fixture(scope="session")
def mmseg_oracle() -> MMSeg:
    """MMSegmentation, or a skip naming how to install it (a failure in CI)."""
    register_stand_in()
    try:
        return MMSeg()
    except ImportError as err:
        reason = f"MMSegmentation oracle unavailable ({err}); {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
