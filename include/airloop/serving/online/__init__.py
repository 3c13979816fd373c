"""A fast, dependency-light reader of Feast's online store, for the model server.

Feast itself cannot be installed next to MLServer (conflicting pins), so the model
server reads what Feast's online stores write, directly:

* **SQLite** (``SqliteOnlineStore``): one table ``<project>_<view>`` per feature view,
  one row per ``(entity_key, feature_name)`` with the value as a serialized
  ``feast.types.Value`` protobuf.
* **Redis** (``RedisOnlineStore``): one hash per entity at
  ``serialize_entity_key(key) + project``; fields ``murmur3_32("<view>:<feature>")``
  hold serialized ``Value`` protobufs, ``_ts:<view>`` the write timestamp.

One module per concern: :mod:`.keys` (entity keys, serialization version 3),
:mod:`.values` (protobuf ``Value`` decoding), :mod:`.sqlite` and :mod:`.redis` (the two
stores' layouts and protocols) and :mod:`.reader` (:class:`OnlineReader`, which keeps
one read-only connection open; one lookup is one SQL statement or one ``HMGET`` for all
views). Standard library only, plus ``hiredis`` where installed.
"""

from airloop.serving.online.base import OnlineStoreUnavailable
from airloop.serving.online.reader import OnlineReader

__all__ = ["OnlineReader", "OnlineStoreUnavailable"]
