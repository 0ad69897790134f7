#!/bin/sh
# Install the serving runtime (the package's base dependencies: Flask, Gunicorn,
# pydantic, ONNX Runtime, ...; no TensorFlow, no Keras; pinned by
# requirements/constraints.txt) into a fresh virtual environment.
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
# so the runtime stage needs no source tree.
"$venv/bin/python" -m pip install --no-input --constraint requirements/constraints.txt .
"$venv/bin/python" -m pip check
# The runtime image installs nothing: drop the installer (and anything the interpreter's
# ensurepip bundled) from the venv.
"$venv/bin/python" -m pip uninstall --yes --no-input pip setuptools 2>/dev/null \
    || "$venv/bin/python" -m pip uninstall --yes --no-input pip
