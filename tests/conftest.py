"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture
def float64():
    """Run one test in float64 and restore the default dtype afterwards (never set it at import time:
    that would leak into every test collected after)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
