"""Feast entity keys (serialization version 3) and entity ids coerced to their dtype."""

from __future__ import annotations

import struct
from typing import Any

from airloop.core.errors import AirloopError

# feast.types.ValueType numbers used in entity keys.
VT_BYTES, VT_STRING, VT_INT32, VT_INT64 = 1, 2, 3, 4

_ENTITY_DTYPES = {
    "int64": VT_INT64,
    "int": VT_INT64,
    "int32": VT_INT32,
    "string": VT_STRING,
    "str": VT_STRING,
    "bytes": VT_BYTES,
}



def entity_value_type(dtype: str) -> int:
    try:
        return _ENTITY_DTYPES[dtype.lower()]
    except KeyError:
        raise AirloopError(
            f"unsupported entity dtype {dtype!r} (use one of {sorted(_ENTITY_DTYPES)})"
        ) from None


def coerce_entity(value: Any, dtype: str) -> Any:
    """``value`` as the Python type of the entity dtype; ValueError if impossible."""
    vt = entity_value_type(dtype)
    if vt in (VT_INT64, VT_INT32):
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer entity id")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not an integer entity id")
            value = int(value)
        elif isinstance(value, (bytes, str)):
            text = value.decode() if isinstance(value, bytes) else value
            try:
                value = int(text.strip())
            except ValueError:
                raise ValueError(f"{text!r} is not an integer entity id") from None
        elif not isinstance(value, int):
            # numpy integers and the like
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{value!r} is not an integer entity id") from None
        bits = 63 if vt == VT_INT64 else 31
        if not -(1 << bits) <= value < (1 << bits):
            raise ValueError(f"{value} is out of range for entity dtype {dtype}")
        return int(value)
    if vt == VT_STRING:
        return value.decode() if isinstance(value, bytes) else str(value)
    return value if isinstance(value, bytes) else str(value).encode()


def serialize_entity_key(join_key: str, value: Any, dtype: str = "int64") -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) for a single join key."""
    vt = entity_value_type(dtype)
    value = coerce_entity(value, dtype)
    if vt == VT_INT64:
        val = struct.pack("<q", value)
    elif vt == VT_INT32:
        val = struct.pack("<i", value)
    elif vt == VT_STRING:
        val = value.encode("utf8")
    else:
        val = value
    key = join_key.encode("utf8")
    return b"".join(
        (
            struct.pack("<I", 1),
            struct.pack("<II", VT_STRING, len(key)),
            key,
            struct.pack("<II", vt, len(val)),
            val,
        )
    )


def deserialize_entity_key(blob: bytes) -> dict[str, Any]:
    """The join keys and values of a version-3 serialized entity key."""
    (n,) = struct.unpack_from("<I", blob, 0)
    offset = 4
    keys = []
    for _ in range(n):
        _, length = struct.unpack_from("<II", blob, offset)
        offset += 8
        keys.append(blob[offset : offset + length].decode("utf8"))
        offset += length
    values: list[Any] = []
    for _ in range(n):
        vt, length = struct.unpack_from("<II", blob, offset)
        offset += 8
        raw = blob[offset : offset + length]
        offset += length
        if vt == VT_INT64:
            values.append(struct.unpack("<q", raw)[0])
        elif vt == VT_INT32:
            values.append(struct.unpack("<i", raw)[0])
        elif vt == VT_STRING:
            values.append(raw.decode("utf8"))
        else:
            values.append(raw)
    return dict(zip(keys, values))
