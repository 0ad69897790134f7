"""Process-level environment for serving, applied before NumPy/TensorFlow load.

Gunicorn runs one worker per core; if each worker's BLAS also spawned a
thread per core, the workers would fight over the same cores and tail latency
would suffer (ONNX Runtime's own pool is set per session, ``DLQR_ORT_THREADS``).
TensorFlow is only imported for the optional Keras cross-check
(``DLQR_KERAS_CROSSCHECK``), so it is kept single-threaded and quiet. Every
value is a default: an operator's explicit environment always wins. Standard
library only.
"""

from __future__ import annotations

import os

#: Defaults applied with ``os.environ.setdefault`` (never overriding the operator).
PROCESS_ENV_DEFAULTS: dict[str, str] = {
    # One BLAS thread per worker: the workers already use every core.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    # TensorFlow: no INFO/WARNING chatter in the JSON logs, no thread pools per core,
    # and no oneDNN notice (its op fusion only matters for the Keras reference path).
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
}


def prepare_process_env() -> None:
    """Set the thread/log defaults above; only effective before numpy/TF are imported."""
    for key, value in PROCESS_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
