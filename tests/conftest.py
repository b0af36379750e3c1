"""Shared test settings.

* One torch thread per process: the tests use small tensors, where intra-op threads only add
  overhead (about 5x on a busy 2-core machine), and `pytest -n 2` already uses both cores.
* ``float64``: opt-in fixture for modules that compute in float64 by default. The default dtype
  is process-global, so it is set per test and restored (set at import it leaked into every other
  module collected by the same worker).
"""

import pytest
import torch


def pytest_configure(config):
    torch.set_num_threads(1)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
