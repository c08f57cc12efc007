"""The allocator takes the fixed thresholds that keep large request buffers on the heap."""

import platform

import pytest

from service.allocator import reuse_large_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_both_thresholds():
    # mallopt refuses a threshold out of its range (returns 0): the constants must be in it.
    assert reuse_large_buffers()
