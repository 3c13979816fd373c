"""Decoding serialized ``feast.types.Value`` protobufs (wire format, scalar types)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# field number -> how to read it (all scalar members of the Value oneof)
_STRING_FIELDS = {2: "string", 32: "json", 36: "uuid", 37: "time_uuid", 44: "decimal"}


_DOUBLE = struct.Struct("<d").unpack_from
_TAG_DOUBLE, _TAG_INT64, _TAG_STRING = 0x29, 0x20, 0x12  # fields 5 (fixed64), 4, 2


def decode_value(buf: bytes | None) -> Any:
    """Decode a serialized ``feast.types.Value`` holding a scalar (None if unset/null).

    The three shapes Feast writes for a view's features almost always are decoded
    without the general loop: a double (tag + 8 bytes), a small non-negative int64
    (tag + one varint byte) and a short string (tag + one length byte); a 100-entity
    lookup decodes ~1,200 values, so this is most of the reader's CPU time."""
    if not buf:
        return None
    n, tag = len(buf), buf[0]
    if tag == _TAG_DOUBLE and n == 9:
        return _DOUBLE(buf, 1)[0]
    if tag == _TAG_INT64 and n == 2 and buf[1] < 0x80:
        return buf[1]
    if tag == _TAG_STRING and n >= 2 and buf[1] < 0x80 and n == 2 + buf[1]:
        return buf[2:].decode("utf8")
    return _decode_general(buf)


def _decode_general(buf: bytes) -> Any:
    pos, out = 0, None
    end = len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            raw, pos = _varint(buf, pos)
            if field == 3:
                out = _signed(raw, 32)
            elif field == 4:
                out = _signed(raw, 64)
            elif field == 7:
                out = bool(raw)
            elif field == 8:
                out = datetime.fromtimestamp(_signed(raw, 64), tz=UTC)
            elif field == 19:
                out = None
            else:
                raise ValueError(f"unsupported feast Value field {field} (varint)")
        elif wire == 1:
            (out,) = struct.unpack_from("<d", buf, pos)
            pos += 8
            if field != 5:
                raise ValueError(f"unsupported feast Value field {field} (fixed64)")
        elif wire == 5:
            (out,) = struct.unpack_from("<f", buf, pos)
            pos += 4
            if field != 6:
                raise ValueError(f"unsupported feast Value field {field} (fixed32)")
        elif wire == 2:
            length, pos = _varint(buf, pos)
            raw = buf[pos : pos + length]
            pos += length
            if field == 1:
                out = bytes(raw)
            elif field in _STRING_FIELDS:
                out = raw.decode("utf8")
            else:
                raise ValueError(
                    f"unsupported feast Value field {field}: only scalar features are served"
                )
        else:
            raise ValueError(f"malformed feast Value (wire type {wire})")
    return out
