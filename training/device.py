"""Which device training runs on: print it, and fail fast when a GPU is required but absent.

``DLQR_REQUIRE_GPU=1`` (or ``true``/``yes``) makes :func:`require_gpu_if_asked`
raise :class:`DeviceError` before any data is loaded or model built, so a GPU
job that silently fell back to the CPU (wrong TensorFlow wheel, missing
driver, ``CUDA_VISIBLE_DEVICES=""``) stops at once with a message saying why.
Also hosts :func:`quiet_backend_logs`, which keeps TensorFlow's start-up
chatter out of the training output unless ``--verbose`` asks for it, and
:func:`backend_environment`, the variables that make GPU training deterministic
and let two training processes share one GPU.
"""

from __future__ import annotations

import logging
import os

REQUIRE_GPU_ENV = "DLQR_REQUIRE_GPU"

#: XLA's switch for deterministic GPU kernels (JAX, and TensorFlow's XLA-compiled steps).
XLA_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


class DeviceError(RuntimeError):
    """A GPU was required (``DLQR_REQUIRE_GPU=1``) but the Keras backend sees none."""


def quiet_backend_logs(verbose: bool = False) -> None:
    """Silence TensorFlow's C++ and absl start-up messages; call before TensorFlow is imported.

    Quiet by default: ``TF_CPP_MIN_LOG_LEVEL=3`` also drops harmless C++ "errors"
    such as ``E0000 ... NodeDef mentions attribute use_unbounded_threadpool``.
    ``verbose`` leaves TensorFlow's own defaults in place. An explicit
    ``TF_CPP_MIN_LOG_LEVEL`` in the environment always wins.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    import_backend_quietly()


#: Start-up notices TensorFlow writes straight to stderr while it is imported, before its
#: logging honours TF_CPP_MIN_LOG_LEVEL (so that variable cannot hide them).
STARTUP_NOTICES = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
)


def import_backend_quietly(verbose: bool = False) -> None:
    """Import Keras (and so its backend) with the backend's start-up notices dropped from stderr.

    TensorFlow 2.21 prints :data:`STARTUP_NOTICES` from C++ during import, twice per
    process, whatever ``TF_CPP_MIN_LOG_LEVEL`` says. No library switch hides them
    (``TF_ENABLE_ONEDNN_OPTS`` would, but it changes the numerics), so stderr's file
    descriptor is captured for the import and everything else in it is written back.
    Also the initializer of the CLI's worker processes. ``verbose``: a plain import.
    """
    import sys
    import tempfile

    if verbose or "keras" in sys.modules:
        import keras  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [ln for ln in text.splitlines(keepends=True) if not any(n in ln for n in STARTUP_NOTICES)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def backend_environment(deterministic: bool = True, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables to set before the Keras backend starts; returns only what changes.

    - ``deterministic`` (the default): ``XLA_FLAGS`` gains
      ``--xla_gpu_deterministic_ops=true`` (appended: flags already there are kept),
      so JAX's GPU kernels give the same weights run after run;
      ``TF_DETERMINISTIC_OPS=1`` does the same for TensorFlow's CUDA kernels
      (:func:`training.train.set_determinism` also calls
      ``tf.config.experimental.enable_op_determinism()``). Off: ``TF_DETERMINISTIC_OPS=0``
      and the XLA flag is not added. On a CPU both change nothing measurable: its
      kernels are deterministic already.
    - Always: no up-front grab of the whole GPU (``XLA_PYTHON_CLIENT_PREALLOCATE=false``
      for JAX, ``TF_FORCE_GPU_ALLOW_GROWTH=true`` for TensorFlow), so the book-split
      process can train on the same GPU beside the main one. A value already set wins.

    Spawned worker processes inherit these through ``os.environ``.
    """
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for key, value in (("XLA_PYTHON_CLIENT_PREALLOCATE", "false"), ("TF_FORCE_GPU_ALLOW_GROWTH", "true")):
        if key not in env:
            out[key] = value
    flags = env.get("XLA_FLAGS", "")
    if deterministic:
        out["TF_DETERMINISTIC_OPS"] = "1"
        if "--xla_gpu_deterministic_ops" not in flags:
            out["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISTIC_FLAG}".strip()
    else:
        out["TF_DETERMINISTIC_OPS"] = "0"
    return out


def op_determinism_wanted(environ: dict[str, str] | None = None) -> bool:
    """False only when ``TF_DETERMINISTIC_OPS`` is set to a false value (``--no-deterministic``)."""
    env = os.environ if environ is None else environ
    return env.get("TF_DETERMINISTIC_OPS", "1").strip().lower() not in ("0", "false", "no", "off")


def gpu_required(environ: dict[str, str] | None = None) -> bool:
    """True when ``DLQR_REQUIRE_GPU`` is set to a true value (1/true/yes/on)."""
    env = os.environ if environ is None else environ
    return env.get(REQUIRE_GPU_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def visible_gpus() -> list[str]:
    """Names of the GPUs the active Keras backend can use (empty on a CPU-only setup)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [g.name for g in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [
            f"{d.platform}:{d.device_kind}" for d in jax.devices() if d.platform in ("gpu", "cuda", "rocm")
        ]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def device_description() -> str:
    """The device Keras's backend will train on, in words, e.g. 'GPU (/physical_device:GPU:0)'."""
    import keras

    backend = keras.backend.backend()
    try:
        gpus = visible_gpus()
    except Exception as exc:  # report, never crash training on a probe
        return f"unknown ({backend} backend: {exc})"
    if gpus:
        return f"GPU ({', '.join(gpus)}), {backend} backend"
    return f"CPU ({os.cpu_count()} cores; no GPU visible to the {backend} backend)"


def require_gpu_if_asked(environ: dict[str, str] | None = None) -> None:
    """Raise :class:`DeviceError` if ``DLQR_REQUIRE_GPU`` is set and no GPU is visible."""
    if not gpu_required(environ):
        return
    try:
        gpus = visible_gpus()
    except Exception as exc:
        raise DeviceError(f"{REQUIRE_GPU_ENV}=1 but probing for a GPU failed: {exc}") from None
    if not gpus:
        import keras

        raise DeviceError(
            f"{REQUIRE_GPU_ENV}=1 but the {keras.backend.backend()} backend sees no GPU. "
            "Install the CUDA build (make install TF=gpu, or the JAX CUDA wheel), check "
            "`nvidia-smi` and CUDA_VISIBLE_DEVICES, or unset DLQR_REQUIRE_GPU to train on the CPU."
        )
