"""Which device training runs on: print it, and fail fast when a GPU is required but absent.

``DLQR_REQUIRE_GPU=1`` (or ``true``/``yes``) makes :func:`require_gpu_if_asked`
raise :class:`DeviceError` before any data is loaded or model built, so a GPU
job that silently fell back to the CPU (wrong TensorFlow wheel, missing
driver, ``CUDA_VISIBLE_DEVICES=""``) stops at once with a message saying why.
Also hosts :func:`quiet_backend_logs`, which keeps TensorFlow's start-up
chatter out of the training output unless ``--verbose`` asks for it.
"""

from __future__ import annotations

import logging
import os

REQUIRE_GPU_ENV = "DLQR_REQUIRE_GPU"


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
