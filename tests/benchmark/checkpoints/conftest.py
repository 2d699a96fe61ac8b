"""The MMSegmentation 1.2.2 oracle of tests/fidelity, for checkpoints MMSeg's own models save."""

from __future__ import annotations

import os
import sys

import pytest
from fidelity.conftest import INSTALL, MMSeg, _stand_in_ext


@pytest.fixture(scope="session")
def mmseg_oracle() -> MMSeg:
    """MMSegmentation, or a skip naming how to install it (a failure in CI)."""
    sys.modules.setdefault("mmcv._ext", _stand_in_ext())
    try:
        return MMSeg()
    except ImportError as err:
        reason = f"MMSegmentation oracle unavailable ({err}); {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
