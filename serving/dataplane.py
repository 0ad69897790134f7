"""The data plane: the steps of one prediction, written once for every door.

``/predict`` (:mod:`serving.api`), the Open Inference Protocol (:mod:`serving.v2`)
and offline scoring (:mod:`serving.offline`) each read their own wire format
into rows and render their own answers; everything between is here:

1. **resolve** the model and version (:meth:`DataPlane.resolve`): unknown model
   (404 ``unknown-model``), unknown version (404 ``unknown-version``), not
   served (503 ``not-ready``);
2. **read the rows**: a door parses its body; rows given as numbers are
   validated by the card's schema here (:func:`validate_row`), so the bounds
   and finiteness checks are those of a ``/predict`` JSON body;
3. **range checks**: values outside the training range are counted (still served);
4. **predict**: scale to float32 and run the network (:meth:`DataPlane.run`);
5. **finiteness**: a non-finite network output is 422 ``validation-error``
   (never NaN in an answer, never a 500);
6. **post-process** with the task's closure;
7. **metrics** (batch size, inference time, outcomes, predicted values);
8. **observers** are told (see below).

Every refusal is one :class:`serving.errors.ServingError` (status, type slug,
detail), raised here and rendered by the door: problem+json, the protocol's
``{"error"}``, or a line of the command's report. So the same bad input gets
the same decision at every door.

Extension points
----------------
- **Version resolution** is one callable, :attr:`DataPlane.resolver`:
  ``resolver(state, request) -> LoadedModel``. The default,
  :func:`resolve_version`, serves the version the request names, else the
  model's default version. A routing policy (canary by percent, routing-key
  stickiness from ``request.headers``, shadow) replaces or wraps it. The chosen
  version is ``Prediction.model.version``; the doors put it in their answer
  (and can set an ``X-Model-Version`` header from it).
- **Running the model** on one stacked float32 array of rows is one callable,
  :attr:`DataPlane.runner`: ``runner(model, x) -> outputs`` with ``x`` of shape
  (n, d) float32. An adaptive batcher (concurrent requests of one gevent worker
  joining one ONNX Runtime run) wraps it: it may concatenate the ``x`` of
  several calls, run once, and hand each caller its slice.
- **Observers** (:meth:`DataPlane.add_observer`) receive one
  :class:`Observation` per answered prediction: model, version, input rows,
  raw outputs, post-processed predictions, latency and request id (drift
  monitor, payload log, shadow scoring). They run on a background thread fed
  by a bounded queue: an observer never delays a request, an exception in one
  is logged and never reaches the client, and when the queue is full the
  observation is dropped and counted (:attr:`ObserverHub.dropped`).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from dlqr.card import ModelCard
from serving.errors import ServingError
from serving.loading import LoadedModel
from serving.registry import ModelState, Registry

log = logging.getLogger(__name__)

NON_FINITE = "the input drives the model to a non-finite output"


@dataclass(frozen=True)
class RequestInfo:
    """What a door knows about the request that the data plane (and its hooks) may use."""

    door: str  #: "predict", "v2" or "offline"
    version: str | None = None  #: the version the request names, if any
    request_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  #: for routing policies
    started: float = field(default_factory=time.perf_counter)  #: perf_counter() at the door


@dataclass(frozen=True)
class Prediction:
    """One answered batch: what the door renders."""

    model: LoadedModel
    outputs: np.ndarray  #: raw network outputs, float64 (n, k)
    predictions: list[dict[str, Any]]  #: post-processed, one per row (None for a refused row)
    inference_seconds: float
    #: row index -> refusal, only when the door asked for per-row decisions (offline scoring)
    row_errors: dict[int, ServingError] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.model.version


@dataclass(frozen=True)
class Observation:
    """What an observer receives after a prediction was answered."""

    model: str
    version: str
    rows: np.ndarray  #: (n, d) inputs in API units, in the bundle's feature order
    outputs: np.ndarray  #: raw network outputs
    predictions: list[dict[str, Any]]
    latency_seconds: float  #: from the door's start to the end of post-processing
    inference_seconds: float
    request_id: str | None
    door: str
    #: The version the request named (``?version=``, ``/versions/<v>/``), or None when routed.
    asked_version: str | None = None


class Observer(Protocol):
    def __call__(self, observation: Observation) -> None: ...


Resolver = Callable[[ModelState, RequestInfo], LoadedModel]
Runner = Callable[[LoadedModel, np.ndarray], np.ndarray]


# ----------------------------------------------------------------- resolution


def not_ready(state: ModelState) -> ServingError:
    """503 for a model with no served default version (Retry-After while it loads)."""
    if state.status in ("pending", "loading"):
        return ServingError(503, "not-ready", f"model {state.name} is {state.status}; retry shortly",
                            headers={"Retry-After": "5"})  # fmt: skip
    return ServingError(503, "not-ready", f"model {state.name} is not ready: {state.reason or state.status}")


def version_model(state: ModelState, version: str) -> LoadedModel:
    """The loaded model of one named version: 404 if there is no such directory, 503 if not served."""
    vs = state.versions.get(version)
    if vs is None:
        raise ServingError(
            404,
            "unknown-version",
            f"model {state.name} has no version {version!r}; versions: {', '.join(state.versions) or 'none'}",
        )
    if not vs.ready or vs.model is None:
        why = vs.reason if vs.status == "failed" else f"{vs.status} (policy: {state.policy})"
        raise ServingError(503, "not-ready", f"model {state.name} version {version} is not served: {why}")
    return vs.model


def resolve_version(state: ModelState, request: RequestInfo) -> LoadedModel:
    """The default routing: the version the request names, else the model's default version."""
    if request.version is not None:
        return version_model(state, request.version)
    if not state.ready or state.model is None:
        raise not_ready(state)
    return state.model


def run_model(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """One ONNX Runtime run over stacked float32 rows."""
    return model.forward(x)


# ---------------------------------------------------------------------- rows


def feature_name(card: ModelCard, loc: Sequence[Any]) -> str:
    """A pydantic error location as the feature it concerns (``ph``, ``X17``, ``px783``)."""
    parts = [p for p in loc if p not in card.schema_tags]
    ints = [p for p in parts if isinstance(p, int)]
    if ints and ints[-1] < card.input_dim:
        return card.features[ints[-1]]
    named = [p for p in parts if isinstance(p, str) and p in card.features]
    return named[0] if named else "/".join(map(str, parts)) or "(instance)"


def invalid_instance(card: ModelCard, exc: ValidationError, noun: str = "feature") -> ServingError:
    """422 ``validation-error`` for one instance the card's schema refuses, naming the feature."""
    err = exc.errors(include_url=False)[0]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ServingError(
        422, "validation-error", f"{noun} {feature_name(card, err['loc'])}: {err['msg']}{more}"
    )


def validate_row(
    card: ModelCard, validate: Callable[..., Any], values: np.ndarray, context: dict[str, Any] | None = None,
    noun: str = "feature",
) -> Any:  # fmt: skip
    """Numbers in the card's feature order -> the card's JSON instance, validated as ``/predict`` does."""
    try:
        return validate(card.instance_from_row(values), context=context)
    except ValidationError as exc:
        raise invalid_instance(card, exc, noun) from None


# ------------------------------------------------------------------ observers


def native_queue(maxsize: int) -> queue.Queue:
    """A standard-library queue that works between real threads, also in the gevent worker.

    The gevent worker patches everything but threads, ``queue`` included: a patched
    ``queue.Queue`` belongs to one thread's event loop, and the observer thread (a real one)
    waiting on it dies with ``LoopExit``. The unpatched class uses real locks.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("queue"):
        return monkey.get_original("queue", "Queue")(maxsize)
    return queue.Queue(maxsize)


def real_sleep() -> Callable[[float], None]:
    """``time.sleep`` as the standard library has it (the gevent worker patches ``time``)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("time"):
        return monkey.get_original("time", "sleep")
    return time.sleep


class ObserverHub:
    """Hands observations to the observers on one daemon thread, through a bounded queue."""

    #: Seconds the thread waits after a wake-up for more observations to hand out together.
    linger = 0.02

    def __init__(self, maxsize: int = 1024):
        self.observers: list[Observer] = []
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[Observation] = native_queue(maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, observer: Observer) -> None:
        with self._lock:
            self.observers.append(observer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dlqr-observers", daemon=True)
                self._thread.start()

    def publish(self, observation: Observation) -> None:
        """Never blocks and never raises."""
        try:
            self._queue.put_nowait(observation)
        except Exception:  # Full (the standard library's, whichever module raised it)
            self.dropped += 1

    def join(self) -> None:
        """Wait until every published observation was handed out (tests, shutdown)."""
        self._queue.join()

    def _run(self) -> None:
        sleep = real_sleep()
        while True:
            batch = [self._queue.get()]
            # Linger, then take what gathered: one wake-up of this thread per burst, not per
            # request (a wake-up is a GIL hand-over that costs the worker more than the observers).
            sleep(self.linger)
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except Exception:  # Empty (the standard library's)
                    break
            for observer in list(self.observers):
                # An observer with observe_many takes the whole burst (one stacked model run for
                # the shadow); the others get one observation at a time.
                many = getattr(observer, "observe_many", None)
                calls = [(many, batch)] if many is not None else [(observer, obs) for obs in batch]
                for call, arg in calls:
                    try:
                        call(arg)
                    except Exception:  # an observer's failure is its own; the service carries on
                        self.failed += 1
                        log.exception("observer %r failed", observer, extra={"event": "observer_failed"})
            for _ in batch:
                self._queue.task_done()


# ------------------------------------------------------------------ the plane


class DataPlane:
    """Resolve, predict, check, post-process, count and observe; see the module docstring.

    ``registry`` may be None for a caller that resolved its model itself (offline scoring
    loads one model); ``metrics`` None records nothing (offline scoring).
    """

    def __init__(
        self,
        registry: Registry | None = None,
        metrics: Any = None,
        *,
        resolver: Resolver = resolve_version,
        runner: Runner = run_model,
    ):
        self.registry = registry
        self.metrics = metrics
        self.resolver = resolver
        self.runner = runner
        self.hub = ObserverHub()

    def add_observer(self, observer: Observer) -> None:
        self.hub.add(observer)

    # ------------------------------------------------------------- resolve

    def state(self, name: str) -> ModelState:
        """The model's current state; 404 ``unknown-model`` if it is not served."""
        state = self.registry.states.get(name) if self.registry is not None else None
        if state is None:
            names = ", ".join(self.registry.names) if self.registry is not None else "none"
            raise ServingError(404, "unknown-model", f"unknown model {name!r}; available: {names}")
        return state

    def resolve(self, name: str, request: RequestInfo) -> LoadedModel:
        """The loaded model (and so the version) that answers this request."""
        return self.resolver(self.state(name), request)

    # ------------------------------------------------------------- predict

    def run(self, model: LoadedModel, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """(n, d) API-unit rows -> raw outputs (float64) and the seconds the network took."""
        x = model.model_input(rows)
        t0 = time.perf_counter()
        out = self.runner(model, x)
        return np.asarray(out, dtype=np.float64), time.perf_counter() - t0

    def predict(
        self, model: LoadedModel, rows: np.ndarray, request: RequestInfo, *, per_row: bool = False
    ) -> Prediction:
        """Steps 3-8 for validated rows of one model.

        A non-finite output refuses the whole request (422), or with ``per_row`` only its row
        (in ``Prediction.row_errors``; its prediction is None).
        """
        name = model.name
        metrics = self.metrics
        if metrics is not None:
            metrics.observe_ranges(name, model.features, rows, model.range_min, model.range_max)
        outputs, seconds = self.run(model, rows)
        row_errors: dict[int, ServingError] = {}
        if not np.isfinite(outputs).all():  # one pass on the common path; rows only on failure
            finite = np.isfinite(outputs).all(axis=1)
            if not per_row:
                # Schema bounds make this unreachable for sane weights; never emit NaN or a 500.
                raise ServingError(422, "validation-error", NON_FINITE,
                                   errors=[{"loc": [], "msg": "non-finite model output",
                                            "type": "non_finite_output"}])  # fmt: skip
            for i in np.flatnonzero(~finite):
                row_errors[int(i)] = ServingError(422, "validation-error", NON_FINITE)
            good = np.flatnonzero(finite)
            kept = model.postprocess(outputs[good]) if len(good) else []
            preds: list[Any] = [None] * len(rows)
            for i, p in zip(good, kept, strict=True):
                preds[int(i)] = p
            answered = kept
        else:
            preds = model.postprocess(outputs)
            answered = preds
        latency = time.perf_counter() - request.started
        if metrics is not None and answered:
            metrics.observe_prediction(name, len(answered), seconds, answered)
            metrics.observe_version(name, model.version, latency)
        pred = Prediction(model, outputs, preds, seconds, row_errors)
        if self.hub.observers:
            self.hub.publish(Observation(name, model.version, rows, outputs, preds, latency, seconds,
                                         request.request_id, request.door, request.version))  # fmt: skip
        return pred


__all__ = [
    "DataPlane",
    "Observation",
    "Observer",
    "Prediction",
    "RequestInfo",
    "feature_name",
    "invalid_instance",
    "resolve_version",
    "run_model",
    "validate_row",
    "version_model",
]
