#!/bin/sh
# Install the serving runtime (the package's base dependencies: Flask, Gunicorn,
# pydantic, ONNX Runtime, ...; no TensorFlow, no Keras; pinned by
# requirements/constraints.txt) into a fresh virtual environment, then strip what
# the server never runs.
#
# Dockerfile.serve RUNs this in its builder stage, and
# tests/deploy/test_install_rehearsal.py runs the very same file into a
# temporary directory, so the image recipe and its rehearsal cannot drift.
#
# Usage (from the build context / repo root):  sh deploy/docker/install-serve.sh VENV_DIR
# Env:   PYTHON   interpreter that creates the venv (default: python3)
set -eu

venv="${1:?usage: install-serve.sh VENV_DIR}"
python="${PYTHON:-python3}"

# The installer itself is pinned so the image and the rehearsal resolve with
# the same pip.
pip_version="26.3"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-input --upgrade "pip==$pip_version"
# Non-editable install: the wheel (code + package data) lands in site-packages,
# so the runtime stage needs no source tree. Resolved as `pip install .` resolves it
# for users (pyproject's dependencies), and checked whole before anything is removed.
# No bytecode yet: it is compiled below, once, for what is kept.
"$venv/bin/python" -m pip install --no-input --no-compile --constraint requirements/constraints.txt .
"$venv/bin/python" -m pip check

# ---- What the server never runs (about 70 MB of a 218 MB venv). Each removal is checked by
# the smoke test below, and the image's test serves every bundle from the result.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
ort="$site/onnxruntime"
# ONNX Runtime's offline tooling: model conversion to the ORT format, the transformer
# optimizers and quantization. InferenceSession never imports them; they are the only users
# of onnxruntime's two other dependencies, protobuf and flatbuffers, which go with them
# (uninstalled by pip, so their metadata goes too).
"$venv/bin/python" -m pip uninstall --yes --no-input protobuf flatbuffers
rm -rf "$ort/tools" "$ort/transformers" "$ort/quantization" "$venv/bin/onnxruntime_test"
# The wheel ships its C library twice: libonnxruntime.so.* for C/C++ embedders, and the same
# runtime linked into the Python extension, which does not load the former (34 MB).
rm -f "$ort"/capi/libonnxruntime.so.*
# The dependencies' own test suites (numpy, gevent, greenlet, zope.interface: ~22 MB with
# their bytecode); importable test helpers such as numpy.testing are kept.
find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} +

# The runtime image installs nothing: drop the installer (and anything the interpreter's
# ensurepip bundled) from the venv.
"$venv/bin/python" -m pip uninstall --yes --no-input pip setuptools 2>/dev/null \
    || "$venv/bin/python" -m pip uninstall --yes --no-input pip

# Bytecode that stays valid in the image. pip would write timestamp-checked .pyc files, but
# the build copies the venv into the runtime stage with file times rounded to the second, so
# about half of them no longer match their source there; on a read-only root every process then
# compiles those modules again at each start (numpy's, say: +0.25 s per process). Hash-checked
# .pyc files do not depend on file times.
"$venv/bin/python" -m compileall -q -f -j 0 --invalidation-mode checked-hash "$venv/lib"

# Smoke test of what is left: the server's imports, and ONNX Runtime running a model (the
# tiny example it ships) on the CPU provider, as serving/registry.py configures it.
"$venv/bin/python" - <<'PY'
import flask, gevent, gunicorn, numpy, PIL.Image, prometheus_client, pydantic_settings  # noqa: F401
import onnxruntime as ort
from onnxruntime.datasets import get_example

import serving.registry  # noqa: F401

session = ort.InferenceSession(get_example("sigmoid.onnx"), providers=["CPUExecutionProvider"])
(inp,) = session.get_inputs()
(out,) = session.run(None, {inp.name: numpy.zeros(inp.shape, numpy.float32)})
assert out.shape == tuple(inp.shape) and float(out.max()) == 0.5, out
print(f"install-serve.sh: onnxruntime {ort.__version__} runs on {session.get_providers()}")
PY
