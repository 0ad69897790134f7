#!/bin/sh
# Install the serving runtime (the package + CPU-only TensorFlow, pinned by
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
# the same pip; setuptools stays in the venv because TensorFlow declares it as
# a runtime dependency, so it is pinned to a current release rather than left
# at whatever the interpreter's ensurepip bundled.
pip_version="26.3"
setuptools_version="84.2.1"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-input --upgrade "pip==$pip_version" "setuptools==$setuptools_version"
# Non-editable install: the wheel (code + package data) lands in site-packages,
# so the runtime stage needs no source tree.
"$venv/bin/python" -m pip install --no-input --constraint requirements/constraints.txt ".[cpu]"
"$venv/bin/python" -m pip check
# The runtime image installs nothing: drop the installer from the venv.
"$venv/bin/python" -m pip uninstall --yes --no-input pip
