"""Open Inference Protocol v2, REST (kserve/open-inference-protocol ``inference_rest.md``).

Endpoints: ``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET
/v2/health/ready``, and per model ``GET /v2/models/<m>[/versions/<v>]``
(metadata), ``GET .../ready`` and ``POST .../infer``.

Everything per model comes from its card and task: the input tensor is
``card.input_name`` with ``card.input_datatype`` (float cards accept FP64 and
FP32; integer cards exactly their integer type), shape ``[-1, d]`` or ``[-1,
*card.input_shape]``; the outputs are the raw network output (``raw_output``,
FP32) plus the task's post-processed tensors
(:meth:`dlqr.tasks.Task.tensor_outputs`). Tensor data may be flat or nested
row-major, or binary after the JSON header (the binary tensor data extension,
decoded and encoded by :mod:`serving.v2_binary`); the batch is the first
dimension of ``shape``.

An inference request is checked exactly (datatype, shape, element count,
element types) and then every row goes through the *same* validation as
``/predict``: it becomes the card's JSON instance (``card.instance_from_row``)
and is validated by the card's pydantic schema, so bounds and finiteness are
those of ``/predict`` by construction. The rows then go through the same data
plane (:mod:`serving.dataplane`) as ``/predict``. Errors are the same
:class:`~serving.errors.ServingError` decisions, rendered as the protocol's
``{"error": "..."}``: 400 for a bad request (a 422 decision of ``/predict``
is 400 here), 404 for an unknown model, version or route, 405 (with
``Allow``) for a method a route does not take, 503 when the model (version)
is not ready. ``OPTIONS`` answers with the methods a path really takes.
Metrics use the same model labels as ``/predict``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Union

import numpy as np
from flask import Flask, Response, request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError
from typing_extensions import TypeAliasType
from werkzeug.exceptions import HTTPException

from dlqr.card import ModelCard
from dlqr.tasks import TensorOutput
from serving import v2_binary
from serving.canary import VERSION_HEADER
from serving.dataplane import RequestInfo, validate_row
from serving.errors import ALLOWED_METHODS_KEY, ServingError, error_response, is_v2_path
from serving.observability import BATCH_KEY, MODEL_KEY, REQUEST_ID_KEY
from serving.registry import ModelState, VersionState
from serving.service import Service, encode, package_version, read_body, service
from serving.v2_binary import BinaryDataError

PLATFORM = "onnx_onnxv1"
SERVER_NAME = "dlqr-serving"
#: Protocol extensions: Triton's binary tensor data, and this server's own (see the README).
EXTENSIONS = (v2_binary.EXTENSION, "model_versions", "version_policy")
RAW_OUTPUT = "raw_output"
#: Every tensor datatype the protocol defines (anything else is "unknown").
DATATYPES = frozenset(
    [
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    ]
)
FLOAT_TYPES = ("FP64", "FP32")


def _bad(detail: str) -> ServingError:
    """A tensor the model cannot take: the ``validation-error`` decision (400 on this door)."""
    return ServingError(422, "validation-error", detail)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(encode(obj), status=status, content_type="application/json")


# ------------------------------------------------------------------ request schema

Number = Union[StrictInt, Annotated[float, Field(strict=True, allow_inf_nan=False)]]  # noqa: UP007
#: Tensor data: numbers, flat or nested to any depth (row-major); booleans and strings refused.
TensorData = TypeAliasType("TensorData", list[Union[Number, "TensorData"]])  # noqa: UP007
Parameters = dict[StrictStr, Union[StrictStr, StrictInt, float, bool]]  # noqa: UP007


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    shape: list[Annotated[StrictInt, Field(ge=0)]]
    datatype: StrictStr
    parameters: Parameters | None = None
    #: None when the tensor is binary (``parameters.binary_data_size``, see serving.v2_binary).
    data: TensorData | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: StrictStr | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


_REQUEST = TypeAdapter(InferenceRequest)


def _where(loc: tuple) -> str:
    """``("inputs", 0, "data", 3, "int")`` -> ``inputs[0].data[3]`` (union member tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("int", "float") or part.startswith(("list[", "union[", "function-")):
            continue
        else:
            out += ("." if out else "") + part
    return out or "body"


def _request_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if errors[0]["type"] == "json_invalid":
        return f"request body is not valid JSON: {errors[0]['ctx'].get('error', errors[0]['msg'])}"
    # A bad tensor element shows up once per union member: report the element, not the members.
    data_errs = [e for e in errors if "data" in e["loc"]]
    if data_errs:
        deepest = max(data_errs, key=lambda e: len(e["loc"]))
        value = deepest.get("input")
        if isinstance(value, float) and not math.isfinite(value):
            what = "not a finite number"
        elif isinstance(value, bool) or value is None or isinstance(value, str | dict):
            what = f"a {type(value).__name__ if value is not None else 'null'}, not a number"
        else:
            what = "not a number or a nested list of numbers"
        return f"{_where(deepest['loc'])}: {what}"
    first = errors[0]
    return f"{_where(first['loc'])}: {first['msg']}"


# ---------------------------------------------------------------------- model spec


@dataclass(frozen=True)
class V2Model:
    """The protocol view of one card: input tensor, accepted datatypes and shapes, outputs."""

    card: ModelCard
    input_name: str
    datatype: str
    accepted: tuple[str, ...]
    #: Per-instance shapes accepted (the flat feature vector, and the card's shape if it has one).
    row_shapes: tuple[tuple[int, ...], ...]
    outputs: tuple[TensorOutput, ...]

    @classmethod
    def from_card(cls, card: ModelCard) -> V2Model:
        dtype = card.input_datatype
        accepted = FLOAT_TYPES if dtype in FLOAT_TYPES else (dtype,)
        shapes = [(card.input_dim,)]
        if card.input_shape and tuple(card.input_shape) != (card.input_dim,):
            shapes.insert(0, tuple(card.input_shape))
        raw = TensorOutput(RAW_OUTPUT, "FP32", (card.output_dim,), "")
        return cls(card, card.input_name, dtype, accepted, tuple(shapes), (raw, *card.task.tensor_outputs()))

    @property
    def metadata_shape(self) -> list[int]:
        return [-1, *self.row_shapes[0]]

    def tensor_metadata(self) -> dict[str, Any]:
        return {
            "inputs": [{"name": self.input_name, "datatype": self.datatype, "shape": self.metadata_shape}],
            "outputs": [
                {"name": o.name, "datatype": o.datatype, "shape": [-1, *o.dims]} for o in self.outputs
            ],
        }

    # ------------------------------------------------------------------ decoding

    def rows(self, req: InferenceRequest, max_batch: int, binary: np.ndarray | None = None) -> np.ndarray:
        """The request's input tensor as (n, d) float64 rows in the card's feature order.

        ``binary`` is the input decoded from binary tensor data, if it came that way.
        """
        if len(req.inputs) != 1:
            names = ", ".join(repr(i.name) for i in req.inputs)
            raise _bad(f"model {self.card.name} takes one input tensor {self.input_name!r}; got {names}")
        inp = req.inputs[0]
        if inp.name != self.input_name:
            raise _bad(f"unknown input {inp.name!r}; model {self.card.name} takes {self.input_name!r}")
        if inp.datatype not in DATATYPES:
            raise _bad(f"input {inp.name!r}: unknown datatype {inp.datatype!r}")
        if inp.datatype not in self.accepted:
            raise _bad(f"input {inp.name!r}: datatype {inp.datatype} is not accepted; use "
                               f"{' or '.join(self.accepted)}")  # fmt: skip
        shape = tuple(inp.shape)
        if len(shape) < 2 or shape[1:] not in self.row_shapes:
            want = " or ".join(str([-1, *s]) for s in self.row_shapes)
            raise _bad(f"input {inp.name!r}: shape {list(shape)} does not match {want} "
                               "(the batch size first)")  # fmt: skip
        n = shape[0]
        if not 1 <= n <= max_batch:
            raise _bad(f"input {inp.name!r}: batch size {n} is outside 1..{max_batch} (DLQR_MAX_BATCH)")
        try:
            arr = binary if binary is not None else np.asarray(inp.data)
        except ValueError:
            raise _bad(f"input {inp.name!r}: nested data is ragged (rows of different lengths)") from None
        expected = math.prod(shape)
        if arr.dtype == object:
            raise _bad(f"input {inp.name!r}: data holds integers too large or mixed nesting depths")
        if arr.size != expected:
            raise _bad(f"input {inp.name!r}: data has {arr.size} elements; shape {list(shape)} needs "
                               f"{expected}")  # fmt: skip
        if arr.ndim > 1 and arr.shape != shape:
            raise _bad(f"input {inp.name!r}: nested data has shape {list(arr.shape)}, declared "
                               f"{list(shape)}")  # fmt: skip
        if inp.datatype not in FLOAT_TYPES:
            if arr.dtype.kind not in "iu":
                raise _bad(f"input {inp.name!r}: {inp.datatype} data must be integers")
            info = np.iinfo(inp.datatype.lower())
            lo, hi = int(arr.min()), int(arr.max())
            if lo < info.min or hi > info.max:
                bad = lo if lo < info.min else hi
                raise _bad(f"input {inp.name!r}: {bad} is out of range for {inp.datatype}")
        return arr.reshape(n, -1).astype(np.float64)

    def instances(self, rows: np.ndarray, validate: Any) -> list[Any]:
        """Each row as the card's JSON instance, validated by the card's schema (as /predict does)."""
        out = []
        for i, row in enumerate(rows):
            try:
                out.append(validate_row(self.card, validate, row))
            except ServingError as exc:
                raise ServingError(
                    exc.status, exc.slug, f"input {self.input_name!r} instance {i}, {exc.detail}"
                ) from None
        return out

    def outputs_for(self, req: InferenceRequest) -> tuple[TensorOutput, ...]:
        if req.outputs is None:
            return self.outputs
        by_name = {o.name: o for o in self.outputs}
        names = [o.name for o in req.outputs]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise _bad(f"unknown output {unknown[0]!r}; model {self.card.name} has "
                               f"{', '.join(by_name)}")  # fmt: skip
        if len(set(names)) != len(names):
            raise _bad("an output is requested more than once")
        return tuple(by_name[n] for n in names)


def _tensor(out: TensorOutput, n: int, raw: np.ndarray, preds: list[dict[str, Any]]) -> dict[str, Any]:
    if out.name == RAW_OUTPUT:
        data = raw.ravel().tolist()
    elif out.dims:
        data = list(itertools.chain.from_iterable(p[out.key] for p in preds))
    else:
        data = [p[out.key] for p in preds]
    return {"name": out.name, "datatype": out.datatype, "shape": [n, *out.dims], "data": data}


# ---------------------------------------------------------------------------- views


def _specs() -> dict[str, V2Model]:
    from flask import current_app

    return current_app.extensions["dlqr_v2"]


def _version(state: ModelState, version: str) -> VersionState:
    vs = state.versions.get(version)
    if vs is None:
        raise ServingError(404, "unknown-version", f"model {state.name} has no version {version!r}; "
                           f"versions: {', '.join(state.versions) or 'none'}")  # fmt: skip
    return vs


def _scalar(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def model_metadata(svc: Service, spec: V2Model, state: ModelState, version: str | None) -> dict[str, Any]:
    """The protocol's model metadata, with the bundle's facts in ``parameters``."""
    card = spec.card
    if version is not None:
        vs = _version(state, version)
        model, status = vs.model, vs.status
    else:
        model, status = state.model, state.status
    params: dict[str, Any] = {
        "title": card.title,
        "task": card.task.kind,
        "status": status,
        "version_policy": state.policy,
        "accepted_datatypes": ",".join(spec.accepted),
        "features": ",".join(card.features),
    }
    params.update({k: _scalar(v) for k, v in card.extra.items()})
    if model is not None:
        prep = model.bundle.preprocessing
        params.update(version=model.version, sha256=model.bundle.onnx_sha256 or "",
                      model_sha256=model.bundle.model_sha256)  # fmt: skip
        threshold = (
            (prep.get("threshold") or {}).get("value") if isinstance(prep.get("threshold"), dict) else None
        )
        if threshold is not None:
            params["threshold"] = threshold
        for key in ("units", "target"):
            if key in prep and key not in params:
                params[key] = _scalar(prep[key])
    return {
        "name": card.name,
        "versions": [v.version for v in state.versions.values() if v.ready],
        "platform": PLATFORM,
        **spec.tensor_metadata(),
        "parameters": params,
        # Not in the protocol: every version on disk with its state (ready, available, failed + why).
        "version_states": [v.describe() for v in state.versions.values()],
    }


def metadata(name: str, version: str | None = None) -> Response:
    svc = service()
    state = svc.plane.state(name)  # 404 before the spec lookup
    return _json(model_metadata(svc, _specs()[name], state, version))


def model_ready(name: str, version: str | None = None) -> Response:
    plane = service().plane
    try:
        plane.resolve(name, RequestInfo("v2", version))
    except ServingError as exc:
        if exc.status != 503:
            raise
        return _json({"name": name, "ready": False, "error": exc.detail}, 503)
    return _json({"name": name, "ready": True})


def infer(name: str, version: str | None = None) -> Response:
    """One inference request; see the module docstring."""
    svc = service()
    plane = svc.plane
    req = request._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    info = RequestInfo("v2", version, environ.get(REQUEST_ID_KEY), req.headers)
    state = plane.state(name)
    environ[MODEL_KEY] = name
    model = plane.resolver(state, info)
    body = read_body(req)
    if not body:
        raise ServingError(400, "bad-request", "request body is empty")
    try:
        head, tensors = v2_binary.split(body, req.headers.get(v2_binary.HEADER))
        parsed = _REQUEST.validate_json(head)
        binary = v2_binary.decode_inputs(parsed.inputs, tensors)
    except ValidationError as exc:
        json_invalid = exc.errors(include_url=False)[0]["type"] == "json_invalid"
        raise ServingError(
            400, "malformed-json" if json_invalid else "bad-request", _request_error(exc)
        ) from None
    spec = _specs()[name]
    wanted = spec.outputs_for(parsed)
    requested = [(o.name, o.parameters) for o in parsed.outputs or ()]
    as_binary = v2_binary.binary_outputs(parsed.parameters, requested, [o.name for o in wanted])
    rows = spec.rows(parsed, svc.schemas[name].max_batch, binary[0] if len(binary) == 1 else None)
    instances = spec.instances(rows, svc.schemas[name].instance_adapter.validate_python)
    raw = spec.card.rows(instances, model.features)
    n = len(raw)
    environ[BATCH_KEY] = n
    pred = plane.predict(model, raw, info)
    body_out: dict[str, Any] = {"model_name": name, "model_version": pred.version}
    if parsed.id is not None:
        body_out["id"] = parsed.id
    body_out["outputs"] = [_tensor(o, n, pred.outputs, pred.predictions) for o in wanted]
    encoded, header_len = v2_binary.encode(body_out, as_binary, encode)
    if header_len is None:
        return Response(encoded, content_type="application/json", headers={VERSION_HEADER: pred.version})
    return Response(encoded, content_type=v2_binary.CONTENT_TYPE,
                    headers={v2_binary.HEADER: str(header_len), VERSION_HEADER: pred.version})  # fmt: skip


def server_metadata() -> Response:
    return _json({"name": SERVER_NAME, "version": package_version(), "extensions": list(EXTENSIONS)})


def live() -> Response:
    return _json({"live": True})


def ready() -> Response:
    svc = service()
    if svc.registry.all_ready:
        lagging = svc.metrics.cluster_not_ready(svc.settings.workers)
        if lagging is None:
            return _json({"live": True, "ready": True})
        return _json({"live": True, "ready": False, "error": f"not ready: {lagging}"}, 503)
    behind = "; ".join(
        f"{s.name}: {s.reason or s.status}" for s in svc.registry.states.values() if not s.ready
    )
    return _json({"live": True, "ready": False, "error": f"not ready: {behind}"}, 503)


#: The endpoint of the catch-all rules: every /v2 path and method no protocol route takes.
NO_ROUTE = "v2_no_route"
_ROUTE_METHODS = ("GET", "POST")  # what the protocol's routes take


def allowed_methods(path: str) -> list[str]:
    """The methods the protocol's routes take on ``path`` (HEAD with GET, and OPTIONS), or []."""
    from flask import current_app

    adapter = current_app.url_map.bind_to_environ(request.environ)
    found = []
    for method in _ROUTE_METHODS:
        try:
            rule, _ = adapter.match(path, method=method, return_rule=True)
        except HTTPException:  # NotFound, MethodNotAllowed, a redirect
            continue
        if not rule.endpoint.startswith(NO_ROUTE):
            found += [method, "HEAD"] if method == "GET" else [method]
    return [*found, "OPTIONS"] if found else []


def no_route(rest: str = "") -> Response:
    """Any other /v2 path or method: the protocol's error body rather than problem+json.

    405 carries the ``Allow`` header RFC 9110 asks for, and ``OPTIONS`` lists exactly the
    methods the path's routes take (never one that would then get 405).
    """
    allowed = allowed_methods(request.path)
    if not allowed:
        raise ServingError(404, "not-found", f"no route {request.path}; see /docs")
    allow = ", ".join(allowed)
    if request.method == "OPTIONS":
        return Response(status=204, headers={"Allow": allow})
    use = " or ".join(m for m in allowed if m not in ("HEAD", "OPTIONS"))
    raise ServingError(405, "method-not-allowed", f"{request.method} is not allowed on {request.path}; use {use}",
                       headers={"Allow": allow})  # fmt: skip


_TENSOR = {"type": "object", "required": ["name", "datatype", "shape", "data"], "properties": {
    "name": {"type": "string"}, "datatype": {"type": "string", "enum": sorted(DATATYPES)},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "data": {"type": "array", "description": "row-major, flat or nested"},
    "parameters": {"type": "object"}}}  # fmt: skip
_INFER_REQUEST = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"}, "parameters": {"type": "object"},
    "inputs": {"type": "array", "minItems": 1, "items": {**_TENSOR, "required": ["name", "datatype", "shape"]}},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                           "properties": {"name": {"type": "string"}}}}}}  # fmt: skip
_INFER_RESPONSE = {"type": "object", "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "outputs": {"type": "array", "items": _TENSOR}}}  # fmt: skip
#: 405: a method the route does not take (with Allow); 413: a body over DLQR_MAX_BODY_BYTES; 415: a
#: compressed body, a charset other than UTF-8, or JSON with a byte-order mark or in UTF-16/32.
_ERROR = {"description": "Error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}  # fmt: skip


def openapi_paths(specs: dict[str, V2Model]) -> dict[str, Any]:
    """The protocol's routes for /openapi.json (and /docs): server routes, then per model."""

    def op(op_id: str, summary: str, description: str = "", body: dict | None = None,
           response: dict | None = None) -> dict[str, Any]:  # fmt: skip
        out: dict[str, Any] = {"operationId": op_id, "tags": ["v2"], "summary": summary, "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": response or {"type": "object"}}}},
            **{code: _ERROR for code in ("400", "404", "405", "413", "415", "503")}}}  # fmt: skip
        if description:
            out["description"] = description
        if body:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        return out

    paths: dict[str, Any] = {
        "/v2": {"get": op("v2_server_metadata", "Open Inference Protocol: server metadata and extensions")},
        "/v2/health/live": {"get": op("v2_live", "Open Inference Protocol: server live")},
        "/v2/health/ready": {
            "get": op("v2_ready", "Open Inference Protocol: every model ready in every worker")
        },
    }
    for name, spec in specs.items():
        shapes = " or ".join(str([-1, *s]) for s in spec.row_shapes)
        outs = ", ".join(f"`{o.name}` {o.datatype} {[-1, *o.dims]}" for o in spec.outputs)
        desc = (f"Input `{spec.input_name}` ({' or '.join(spec.accepted)}, shape {shapes}, the batch first); "
                f"outputs {outs}. Append `/versions/{{version}}` before `/infer` for a specific version. Tensors may "
                "also be binary after the JSON header (binary tensor data extension: `Inference-Header-Content-Length`, "
                "`parameters.binary_data_size`, `binary_data`, `binary_data_output`).")  # fmt: skip
        paths[f"/v2/models/{name}"] = {
            "get": op(f"v2_metadata_{name}", f"Open Inference Protocol: {name} metadata")
        }
        paths[f"/v2/models/{name}/ready"] = {
            "get": op(f"v2_model_ready_{name}", f"Open Inference Protocol: {name} ready")
        }
        paths[f"/v2/models/{name}/infer"] = {"post": op(f"v2_infer_{name}", f"Open Inference Protocol: infer with {name}",
                                                        desc, _INFER_REQUEST, _INFER_RESPONSE)}  # fmt: skip
    return paths


def init_app(app: Flask, cards: tuple[ModelCard, ...]) -> None:
    """Register the protocol's routes: one rule per served card, so metric labels stay bounded."""
    app.extensions["dlqr_v2"] = {c.name: V2Model.from_card(c) for c in cards}
    # OPTIONS is answered by no_route for every /v2 path (Flask's automatic OPTIONS would list the
    # catch-all rule's methods too), and 405s raised by routing name the protocol's methods.
    app.extensions[ALLOWED_METHODS_KEY] = lambda path: (
        ", ".join(allowed_methods(path)) if is_v2_path(path) else None
    )
    app.register_error_handler(
        BinaryDataError, lambda exc: error_response(ServingError(400, "bad-request", str(exc)))
    )
    route = partial(app.add_url_rule, provide_automatic_options=False)
    route("/v2", "v2_server", server_metadata, methods=["GET"])
    route("/v2/", "v2_server_slash", server_metadata, methods=["GET"])
    route("/v2/health/live", "v2_live", live, methods=["GET"])
    route("/v2/health/ready", "v2_ready", ready, methods=["GET"])
    routes = (
        ("", metadata, "GET", "meta"),
        ("/ready", model_ready, "GET", "ready"),
        ("/infer", infer, "POST", "infer"),
    )
    for name in [c.name for c in cards] + [None]:
        base = f"/v2/models/{name}" if name else "/v2/models/<name>"
        tag = name or "unknown"
        defaults = {"name": name} if name else None
        for suffix, view, method, kind in routes:
            route(base + suffix, f"v2_{kind}_{tag}", view, methods=[method], defaults=defaults)
            route(f"{base}/versions/<version>{suffix}", f"v2_{kind}_{tag}_version", view, methods=[method],
                  defaults=defaults)  # fmt: skip
    every = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    route("/v2/<path:rest>", NO_ROUTE, no_route, methods=every)
    for i, path in enumerate(("/v2", "/v2/")):  # the server metadata routes take GET only
        route(path, f"{NO_ROUTE}_root{i}", no_route, methods=[m for m in every if m != "GET"])


__all__ = ["V2Model", "allowed_methods", "init_app", "model_metadata", "openapi_paths"]
