"""Test-only Gunicorn config: the real ``serving/gunicorn.conf.py`` plus one probe hook.

``post_worker_init`` runs in each worker right after it has imported the WSGI app
(which verifies, loads and self-tests every model) and before it accepts a connection.
The hook writes the worker's ``sys.modules`` to ``$DLQR_TEST_PROBE_DIR/<pid>.json`` so a
test can check which libraries a ready worker has imported. Nothing else changes.
"""

import json
import os
import runpy
import sys
from pathlib import Path

_REAL = Path(__file__).resolve().parents[2] / "serving" / "gunicorn.conf.py"
globals().update({k: v for k, v in runpy.run_path(str(_REAL)).items() if not k.startswith("__")})


def post_worker_init(worker):
    out = Path(os.environ["DLQR_TEST_PROBE_DIR"]) / f"{os.getpid()}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "modules": sorted(sys.modules)}))
    tmp.replace(out)
