import sys

from densitylab.runtime import keep_large_allocations_in_heap


def test_allocator_setting_applies_on_linux_and_is_idempotent():
    applied = keep_large_allocations_in_heap()
    assert applied == sys.platform.startswith("linux")
    assert keep_large_allocations_in_heap() == applied
