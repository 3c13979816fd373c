"""What the online-store backends share."""

from __future__ import annotations

from airloop.core.errors import AirloopError


class OnlineStoreUnavailable(AirloopError):
    """The online store (file, table or server) is not there or cannot be read."""
