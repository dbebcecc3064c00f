import sys

import torch

from densitylab.runtime import keep_large_allocations_in_heap


def test_allocator_setting_applies_on_linux_and_is_idempotent():
    applied = keep_large_allocations_in_heap()
    assert applied == sys.platform.startswith("linux")
    assert keep_large_allocations_in_heap() == applied
    big = torch.ones(64, 256, 28, 28)  # allocations above the default 32 MiB still work
    assert float(big.sum()) == 64 * 256 * 28 * 28
