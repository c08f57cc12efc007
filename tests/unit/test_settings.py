"""Settings a service could not honour are refused at start, not at the first request."""

import pytest
from pydantic import ValidationError

from service.settings import Settings

# The session record stores ttl_seconds as an unsigned 32-bit integer.
U32_MAX = 2**32 - 1


def test_a_session_ttl_limit_beyond_32_bits_is_refused():
    assert Settings(max_session_ttl_seconds=U32_MAX).max_session_ttl_seconds == U32_MAX
    with pytest.raises(ValidationError, match="max_session_ttl_seconds"):
        Settings(max_session_ttl_seconds=U32_MAX + 1)


def test_a_default_ttl_above_the_limit_is_refused():
    with pytest.raises(ValidationError, match="session_ttl_seconds"):
        Settings(session_ttl_seconds=7200, max_session_ttl_seconds=3600)
