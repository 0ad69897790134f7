"""The binary tensor data codec (serving.v2_binary), on bodies built by hand byte for byte."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from serving import v2_binary
from serving.v2_binary import BinaryDataError, binary_outputs, decode_inputs, encode, header_length, split


@dataclass
class Inp:
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = field(default=None)
    data: Any = None


def binary(name: str, datatype: str, shape: list[int], size: int) -> Inp:
    return Inp(name, datatype, shape, {"binary_data_size": size})


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ------------------------------------------------------------------------- header length


def test_header_length_absent_means_a_plain_json_body():
    assert header_length(None, 10) is None
    assert split(b'{"inputs":[]}', None) == (b'{"inputs":[]}', None)


def test_split_cuts_the_json_header_from_the_tensor_bytes():
    head = b'{"inputs":[]}'
    assert split(head + b"\x01\x02", str(len(head))) == (head, b"\x01\x02")
    assert split(head, f" {len(head)} ") == (head, b"")  # the whole body is header: no tensor bytes


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "non-negative integer"),
        ("abc", "non-negative integer"),
        ("-1", "non-negative integer"),
        ("+5", "non-negative integer"),
        ("1.5", "non-negative integer"),
        ("1_0", "non-negative integer"),
        ("\u0661\u0662", "non-negative integer"),  # Arabic-Indic digits: int() would take them
        ("0", "is 0"),
        ("11", "only 10 bytes"),
        ("99999999999999999999999999", "only 10 bytes"),
    ],
)
def test_bad_header_lengths_are_refused_with_the_reason(value, fragment):
    with pytest.raises(BinaryDataError, match=fragment) as info:
        split(b"0123456789", value)
    assert v2_binary.HEADER in str(info.value)


@pytest.mark.parametrize("bom", [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])
def test_a_json_header_with_a_byte_order_mark_is_refused(bom):
    head = bom + b'{"inputs":[]}'
    with pytest.raises(BinaryDataError, match="byte-order mark"):
        split(head + b"\x00" * 4, str(len(head)))


# ------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("FP64", [[0.25, -1.5], [3.0, 1e300]]),
        ("FP32", [[0.25, -1.5], [3.0, 7.0]]),
        ("FP16", [[0.5, 2.0], [-4.0, 1.0]]),
        ("UINT8", [[0, 255], [7, 128]]),
        ("INT8", [[-128, 127], [0, 1]]),
        ("UINT16", [[0, 65535], [1, 2]]),
        ("INT16", [[-32768, 32767], [0, 1]]),
        ("UINT32", [[0, 2**32 - 1], [1, 2]]),
        ("INT32", [[-(2**31), 2**31 - 1], [0, 1]]),
        ("UINT64", [[0, 2**64 - 1], [1, 2]]),
        ("INT64", [[-(2**63), 2**63 - 1], [0, 1]]),
        ("BOOL", [[True, False], [False, True]]),
    ],
)
def test_every_fixed_size_datatype_decodes_little_endian_row_major(datatype, values):
    dtype = v2_binary.DTYPES[datatype]
    raw = np.asarray(values, dtype=dtype).astype(dtype.newbyteorder("<")).tobytes()
    (arr,) = decode_inputs([binary("x", datatype, [2, 2], len(raw))], raw)
    assert arr.shape == (2, 2) and arr.tolist() == values
    assert v2_binary.tensor_bytes(datatype, values) == raw  # and encodes back to the same bytes


def test_little_endian_is_the_byte_order():
    (arr,) = decode_inputs([binary("x", "UINT32", [1], 4)], b"\x01\x00\x00\x00")
    assert arr.tolist() == [1]


def test_several_inputs_take_their_bytes_in_order_and_json_inputs_get_none():
    a = np.arange(6, dtype="<f4").tobytes()
    b = bytes([1, 0, 1])
    inputs = [
        binary("a", "FP32", [2, 3], len(a)),
        Inp("j", "FP64", [1], data=[1.0]),
        binary("b", "BOOL", [3], 3),
    ]
    out = decode_inputs(inputs, a + b)
    assert (
        out[0].tolist() == [[0, 1, 2], [3, 4, 5]]
        and out[1] is None
        and out[2].tolist() == [True, False, True]
    )


def test_bytes_tensors_are_length_prefixed_elements():
    elements = [b"ab", b"", "\u00e9".encode()]
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    (arr,) = decode_inputs([binary("s", "BYTES", [3], len(raw))], raw)
    assert arr.dtype == object and arr.tolist() == elements
    assert v2_binary.tensor_bytes("BYTES", elements) == raw


@pytest.mark.parametrize(
    ("raw", "count", "fragment"),
    [
        (b"\x02\x00", 1, "inside an element's 4-byte length"),
        (struct.pack("<I", 5) + b"abc", 1, "declares 5 bytes but only 3 remain"),
        (struct.pack("<I", 2**32 - 1) + b"abc", 1, "declares 4,294,967,295 bytes"),
        (struct.pack("<I", 1) + b"a", 2, "holds 1 elements; the shape needs 2"),
        (struct.pack("<I", 0) * 3, 2, "more than 2 elements"),
    ],
)
def test_malformed_bytes_tensors_are_refused(raw, count, fragment):
    with pytest.raises(BinaryDataError, match=fragment):
        decode_inputs([binary("s", "BYTES", [count], len(raw))], raw)


@pytest.mark.parametrize(
    ("inputs", "tail", "fragment"),
    [
        # the declared size disagrees with datatype x shape
        ([binary("x", "FP32", [1, 3], 8)], b"\x00" * 8, "is 8 bytes; shape [1, 3] of FP32 needs 12"),
        ([binary("x", "FP64", [2, 2], 16)], b"\x00" * 16, "needs 32"),
        # more declared than sent, including a size no body could hold
        ([binary("x", "UINT8", [1, 4], 5)], b"\x00" * 4, "is 5 bytes but only 4 follow"),
        ([binary("x", "UINT8", [1, 4], 10**18)], b"\x00" * 4, "1,000,000,000,000,000,000 bytes"),
        # a shape whose byte count would be astronomical
        ([binary("x", "FP64", [10**12, 10**9], 8)], b"\x00" * 8, "needs 8,000,000,000,000,000,000,000"),
        # bytes left over that no input claims
        ([binary("x", "UINT8", [1, 2], 2)], b"\x00" * 3, "1 bytes after the JSON header belong to no input"),
        # the size parameter itself is wrong
        ([binary("x", "UINT8", [1], -1)], b"\x00", "non-negative integer; got -1"),
        ([binary("x", "UINT8", [1], "1")], b"\x00", "non-negative integer; got '1'"),
        ([binary("x", "UINT8", [1], 1.0)], b"\x00", "non-negative integer; got 1.0"),
        ([binary("x", "UINT8", [1], True)], b"\x00", "non-negative integer; got True"),
        # neither data nor a size, or both
        ([Inp("x", "UINT8", [1])], b"", "neither data nor parameters.binary_data_size"),
        ([Inp("x", "UINT8", [1], {"binary_data_size": 1}, [1])], b"\x00", "both data and"),
        # values the protocol cannot carry or the datatype cannot hold
        ([binary("x", "FP17", [1], 4)], b"\x00" * 4, "unknown datatype 'FP17'"),
        ([binary("x", "BOOL", [2], 2)], b"\x01\x02", "BOOL bytes must be 0 or 1"),
        ([binary("x", "FP64", [2], 16)], np.array([1.0, np.nan]).tobytes(), "element 1 is not a finite"),
        ([binary("x", "FP32", [1], 4)], np.array([np.inf], "<f4").tobytes(), "element 0 is not a finite"),
    ],
)
def test_hostile_inputs_are_refused_with_a_clear_reason(inputs, tail, fragment):
    with pytest.raises(BinaryDataError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        decode_inputs(inputs, tail)


def test_a_binary_size_without_the_header_is_refused():
    with pytest.raises(BinaryDataError, match="no Inference-Header-Content-Length header"):
        decode_inputs([binary("x", "UINT8", [1], 1)], None)


def test_json_inputs_with_tensor_bytes_left_over_are_refused():
    with pytest.raises(BinaryDataError, match="belong to no input"):
        decode_inputs([Inp("x", "UINT8", [1], data=[1])], b"\x00")


def test_decoding_does_not_copy_the_body():
    raw = np.arange(4, dtype="<f8").tobytes()
    (arr,) = decode_inputs([binary("x", "FP64", [4], 32)], raw)
    assert not arr.flags.owndata  # a view on the request body, however large the tensor


# ------------------------------------------------------------------------------- outputs


def test_binary_outputs_follow_the_request_flag_and_the_per_output_override():
    names = ["a", "b", "c"]
    assert binary_outputs(None, None, names) == frozenset()
    assert binary_outputs({"binary_data_output": True}, None, names) == frozenset(names)
    assert binary_outputs({"binary_data_output": False}, None, names) == frozenset()
    requested = [("a", {"binary_data": True}), ("b", None), ("c", {"binary_data": False})]
    assert binary_outputs(None, requested, names) == {"a"}
    assert binary_outputs({"binary_data_output": True}, requested, names) == {"a", "b"}


@pytest.mark.parametrize(
    ("params", "requested", "fragment"),
    [
        ({"binary_data_output": 1}, None, "parameters.binary_data_output must be true or false; got 1"),
        ({"binary_data_output": "true"}, None, "got 'true'"),
        (None, [("a", {"binary_data": "yes"})], "output 'a': parameters.binary_data must be true or false"),
    ],
)
def test_binary_flags_must_be_booleans(params, requested, fragment):
    with pytest.raises(BinaryDataError, match=fragment):
        binary_outputs(params, requested, ["a"])


def test_encode_puts_binary_outputs_after_the_header_in_output_order():
    response = {
        "model_name": "m",
        "outputs": [
            {"name": "p", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 0.25, 1.0, 2.0]},
            {"name": "j", "datatype": "INT64", "shape": [2], "data": [3, 4]},
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ],
    }
    body, n = encode(response, frozenset({"p", "b"}), dumps)
    head = json.loads(body[:n])
    outs = {o["name"]: o for o in head["outputs"]}
    assert outs["p"]["parameters"] == {"binary_data_size": 16} and "data" not in outs["p"]
    assert outs["b"]["parameters"] == {"binary_data_size": 2} and "data" not in outs["b"]
    assert outs["j"]["data"] == [3, 4] and "parameters" not in outs["j"]
    tail = body[n:]
    assert np.frombuffer(tail[:16], "<f4").tolist() == [0.5, 0.25, 1.0, 2.0]
    assert tail[16:] == b"\x01\x00"


def test_encode_without_binary_outputs_is_plain_json():
    response = {"outputs": [{"name": "j", "datatype": "FP64", "shape": [1], "data": [1.5]}]}
    body, n = encode(response, frozenset(), dumps)
    assert n is None and json.loads(body) == response


def test_a_round_trip_through_the_codec_is_exact():
    values = np.random.default_rng(0).random((3, 5))
    raw = values.astype("<f8").tobytes()
    head = dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP64", "shape": [3, 5], "parameters": {"binary_data_size": 120}}
            ]
        }
    )
    got_head, tail = split(head + raw, str(len(head)))
    (arr,) = decode_inputs([binary("x", "FP64", [3, 5], 120)], tail)
    assert json.loads(got_head)["inputs"][0]["name"] == "x" and np.array_equal(arr, values)
