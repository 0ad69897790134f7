"""Binary tensor data extension of the Open Inference Protocol v2 (REST), as Triton and KServe accept it.

A request may carry tensors as raw bytes after its JSON header: the HTTP header
``Inference-Header-Content-Length`` gives the JSON header's length in bytes, and
each binary input names its byte count in ``parameters.binary_data_size``; the
tensors follow the JSON in the order of ``inputs``, little-endian, row-major,
without padding (``BOOL`` one byte 0 or 1, ``BYTES`` a 4-byte little-endian
length before each element). Outputs come back the same way when the request
asks: ``parameters.binary_data`` on a requested output, or
``parameters.binary_data_output`` on the request for every output (the
per-output flag wins); the response then carries its own
``Inference-Header-Content-Length`` and each binary output its
``binary_data_size``.

This module is the codec only, with no Flask in it: :func:`split` cuts a body
into JSON header and tensor bytes, :func:`decode_inputs` turns those bytes into
one numpy array per binary input, :func:`binary_outputs` reads which outputs the
request wants binary and :func:`encode` builds the response body. Every problem
is a :class:`BinaryDataError` (the caller answers 400); nothing here allocates
more than the body it was given, whatever sizes a request declares.

Hand-written because no maintained library does the server side without its
whole server: ``tritonclient`` ships only the client half (it builds these
bodies), and KServe's and MLServer's decoders are bound to their own request
models and ASGI apps.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

#: The HTTP header giving the JSON header's length in bytes (request and response).
HEADER = "Inference-Header-Content-Length"
#: The name servers announce in ``GET /v2`` ``extensions``.
EXTENSION = "binary_tensor_data"
#: Content type of a response that carries binary tensors.
CONTENT_TYPE = "application/octet-stream"
SIZE_PARAM = "binary_data_size"

#: Fixed-size datatypes and their little-endian numpy dtypes; BYTES is length-prefixed.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_BOMS = (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")
_LENGTH = struct.Struct("<I")


class BinaryDataError(ValueError):
    """A binary request the codec cannot accept; the message says why (answered 400)."""


class TensorInput(Protocol):
    """What the codec reads of one request input (the V2 request model has these fields)."""

    name: str
    datatype: str
    shape: list[int]
    parameters: Mapping[str, Any] | None
    data: Any


def header_length(value: str | None, body_length: int) -> int | None:
    """The JSON header's length from ``Inference-Header-Content-Length`` (None when absent)."""
    if value is None:
        return None
    text = value.strip()
    # ASCII digits only: int() would also take "+5", " 5", "1_0" and non-ASCII digits.
    if not text or not (text.isascii() and text.isdigit()):
        raise BinaryDataError(f"{HEADER} must be a non-negative integer; got {value!r}")
    length = int(text)
    if length == 0:
        raise BinaryDataError(f"{HEADER} is 0: the JSON inference header is empty")
    if length > body_length:
        raise BinaryDataError(f"{HEADER} is {length:,} but the body has only {body_length:,} bytes")
    return length


def split(body: bytes, header_value: str | None) -> tuple[bytes, bytes | None]:
    """``(JSON header, tensor bytes)``; the tensor bytes are None when the header is absent."""
    length = header_length(header_value, len(body))
    if length is None:
        return body, None
    head = body[:length]
    if head.startswith(_BOMS):
        raise BinaryDataError(
            "the JSON inference header starts with a byte-order mark; send UTF-8 without one"
        )
    return head, body[length:]


def _size_param(inp: TensorInput) -> int | None:
    params = inp.parameters or {}
    if SIZE_PARAM not in params:
        return None
    size = params[SIZE_PARAM]
    if type(size) is not int or size < 0:  # bool is an int subclass: refuse it too
        raise BinaryDataError(
            f"input {inp.name!r}: parameters.{SIZE_PARAM} must be a non-negative integer; got {size!r}"
        )
    return size


def _bytes_elements(name: str, raw: memoryview, count: int) -> np.ndarray:
    """A BYTES tensor: ``count`` elements, each a 4-byte little-endian length then its bytes."""
    out: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BinaryDataError(f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        (n,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if n > len(raw) - offset:
            raise BinaryDataError(
                f"input {name!r}: BYTES element {len(out)} declares {n:,} bytes but only "
                f"{len(raw) - offset:,} remain"
            )
        out.append(bytes(raw[offset : offset + n]))
        offset += n
        if len(out) > count:
            break
    if len(out) != count:
        held = f"more than {count}" if len(out) > count else str(len(out))
        raise BinaryDataError(f"input {name!r}: BYTES data holds {held} elements; the shape needs {count}")
    arr = np.empty(count, dtype=object)
    arr[:] = out
    return arr


def _decode(inp: TensorInput, raw: memoryview) -> np.ndarray:
    count = math.prod(inp.shape)
    if inp.datatype == "BYTES":
        return _bytes_elements(inp.name, raw, count).reshape(inp.shape)
    dtype = DTYPES.get(inp.datatype)
    if dtype is None:
        raise BinaryDataError(f"input {inp.name!r}: unknown datatype {inp.datatype!r}")
    need = count * dtype.itemsize
    if len(raw) != need:
        raise BinaryDataError(
            f"input {inp.name!r}: {SIZE_PARAM} is {len(raw):,} bytes; shape {list(inp.shape)} of "
            f"{inp.datatype} needs {need:,}"
        )
    if inp.datatype == "BOOL":
        flat = np.frombuffer(raw, dtype=np.uint8)
        if flat.size and flat.max() > 1:
            raise BinaryDataError(f"input {inp.name!r}: BOOL bytes must be 0 or 1")
        return flat.astype(bool).reshape(inp.shape)
    arr = np.frombuffer(raw, dtype=dtype)
    if dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise BinaryDataError(f"input {inp.name!r}: element {bad} is not a finite number")
    return arr.reshape(inp.shape)


def decode_inputs(inputs: Sequence[TensorInput], tensors: bytes | None) -> list[np.ndarray | None]:
    """One array per input: the decoded binary tensor, or None for an input sent as JSON ``data``.

    ``tensors`` is what follows the JSON header (None without ``Inference-Header-Content-Length``).
    Every declared size is checked against the bytes left before anything is sliced, and the
    bytes must be used up exactly.
    """
    out: list[np.ndarray | None] = []
    view = memoryview(tensors) if tensors is not None else None
    offset = 0
    for inp in inputs:
        size = _size_param(inp)
        if size is None:
            if inp.data is None:
                raise BinaryDataError(f"input {inp.name!r} has neither data nor parameters.{SIZE_PARAM}")
            out.append(None)
            continue
        if inp.data is not None:
            raise BinaryDataError(f"input {inp.name!r} has both data and parameters.{SIZE_PARAM}; send one")
        if view is None:
            raise BinaryDataError(
                f"input {inp.name!r} declares parameters.{SIZE_PARAM} but the request has no {HEADER} header"
            )
        left = len(view) - offset
        if size > left:
            raise BinaryDataError(
                f"input {inp.name!r}: {SIZE_PARAM} is {size:,} bytes but only {left:,} follow the JSON header"
            )
        out.append(_decode(inp, view[offset : offset + size]))
        offset += size
    if view is not None and offset != len(view):
        raise BinaryDataError(
            f"{len(view) - offset:,} bytes after the JSON header belong to no input "
            f"(the inputs' {SIZE_PARAM} add up to {offset:,})"
        )
    return out


def _flag(params: Mapping[str, Any] | None, key: str, where: str) -> bool | None:
    if not params or key not in params:
        return None
    value = params[key]
    if not isinstance(value, bool):
        raise BinaryDataError(f"{where}parameters.{key} must be true or false; got {value!r}")
    return value


def binary_outputs(
    request_params: Mapping[str, Any] | None,
    requested: Iterable[tuple[str, Mapping[str, Any] | None]] | None,
    names: Sequence[str],
) -> frozenset[str]:
    """The output names to send as binary.

    ``requested`` is the request's ``outputs`` as ``(name, parameters)`` (None when it lists
    none); an output's ``binary_data`` overrides the request's ``binary_data_output``.
    """
    default = bool(_flag(request_params, "binary_data_output", ""))
    per_output: dict[str, bool | None] = {}
    for name, params in requested or ():
        per_output[name] = _flag(params, "binary_data", f"output {name!r}: ")
    chosen = []
    for name in names:
        flag = per_output.get(name)
        if flag if flag is not None else default:
            chosen.append(name)
    return frozenset(chosen)


def tensor_bytes(datatype: str, data: Any) -> bytes:
    """One tensor's data (a nested list or array, row-major) as the extension's bytes."""
    if datatype == "BYTES":
        parts = []
        for item in np.asarray(data, dtype=object).ravel():
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(raw)) + raw)
        return b"".join(parts)
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise BinaryDataError(f"unknown datatype {datatype!r}")
    return np.ascontiguousarray(data, dtype=dtype).tobytes()


def encode(response: dict[str, Any], binary: frozenset[str], dumps: Any) -> tuple[bytes, int | None]:
    """``(body, JSON header length)``: the outputs named in ``binary`` leave ``data`` for bytes.

    ``response`` is the JSON response with every output's ``data``; it is changed in place.
    ``dumps`` serializes the JSON header to bytes. The length is None when no output is binary
    (the body is then plain JSON).
    """
    if not binary:
        return dumps(response), None
    tails = []
    for out in response.get("outputs", ()):
        if out["name"] not in binary:
            continue
        raw = tensor_bytes(out["datatype"], out.pop("data"))
        out["parameters"] = {**out.get("parameters", {}), SIZE_PARAM: len(raw)}
        tails.append(raw)
    head = dumps(response)
    return head + b"".join(tails), len(head)


__all__ = [
    "CONTENT_TYPE",
    "DTYPES",
    "EXTENSION",
    "HEADER",
    "BinaryDataError",
    "binary_outputs",
    "decode_inputs",
    "encode",
    "header_length",
    "split",
    "tensor_bytes",
]
