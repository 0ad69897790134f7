"""Test-only Gunicorn config: the real ``serving/gunicorn.conf.py`` with a slow model run.

``post_worker_init`` runs in each worker after its models were loaded and self-tested. The hook
wraps ONNX Runtime's run (``serving.loading.OnnxForward``) so that a run of exactly
``$DLQR_TEST_SLOW_ROWS`` rows takes ``$DLQR_TEST_SLOW_SECONDS`` longer (a gevent sleep, so the
worker keeps taking requests meanwhile, as it would behind a long batch), and appends the row
count of every run to ``$DLQR_TEST_RUNS_DIR/<pid>.txt``: a test can tell which requests reached
the model. Nothing else changes.
"""

import os
import runpy
from pathlib import Path

_REAL = Path(__file__).resolve().parents[2] / "serving" / "gunicorn.conf.py"
globals().update({k: v for k, v in runpy.run_path(str(_REAL)).items() if not k.startswith("__")})


def post_worker_init(worker):
    import gevent

    from serving import loading

    slow_rows = int(os.environ["DLQR_TEST_SLOW_ROWS"])
    slow_seconds = float(os.environ["DLQR_TEST_SLOW_SECONDS"])
    runs = Path(os.environ["DLQR_TEST_RUNS_DIR"]) / f"{os.getpid()}.txt"
    real = loading.OnnxForward.__call__

    def call(self, x):
        with runs.open("a") as f:
            f.write(f"{len(x)}\n")
        if len(x) == slow_rows:
            gevent.sleep(slow_seconds)
        return real(self, x)

    loading.OnnxForward.__call__ = call
