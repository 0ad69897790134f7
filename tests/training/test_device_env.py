"""The backend environment ``train`` sets: deterministic GPU kernels, a shared GPU."""

from __future__ import annotations

import pytest

from training import device


def test_deterministic_by_default_sets_both_backends_switches():
    env = device.backend_environment(environ={})
    assert env["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=true"  # JAX (and TF's XLA steps)
    assert env["TF_DETERMINISTIC_OPS"] == "1"  # TensorFlow's CUDA kernels
    assert device.op_determinism_wanted(env) is True


def test_existing_xla_flags_are_kept_and_the_flag_is_appended():
    env = device.backend_environment(environ={"XLA_FLAGS": "--xla_dump_to=/tmp/x"})
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true"


def test_a_deterministic_flag_already_given_is_left_alone():
    given = {"XLA_FLAGS": "--xla_gpu_deterministic_ops=false"}
    assert "XLA_FLAGS" not in device.backend_environment(environ=given)


def test_no_deterministic_switches_tensorflow_off_and_adds_no_xla_flag():
    env = device.backend_environment(False, environ={"XLA_FLAGS": "--xla_dump_to=/tmp/x"})
    assert "XLA_FLAGS" not in env and env["TF_DETERMINISTIC_OPS"] == "0"
    assert device.op_determinism_wanted(env) is False


def test_two_processes_can_share_one_gpu_unless_the_user_said_otherwise():
    env = device.backend_environment(environ={})
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    mine = {"XLA_PYTHON_CLIENT_PREALLOCATE": "true", "TF_FORCE_GPU_ALLOW_GROWTH": "false"}
    env = device.backend_environment(environ=mine)
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in env and "TF_FORCE_GPU_ALLOW_GROWTH" not in env


@pytest.mark.parametrize(("value", "wanted"), [("0", False), ("false", False), ("1", True), (None, True)])
def test_op_determinism_wanted(value, wanted):
    assert device.op_determinism_wanted({} if value is None else {"TF_DETERMINISTIC_OPS": value}) is wanted


def test_train_sets_the_environment_before_the_run(monkeypatch, tmp_path):
    """`train` puts the variables into os.environ (inherited by its worker processes) first thing."""
    import os

    from training.cli import main

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("DLQR_REQUIRE_GPU", "0")
    # No data dir: the run stops at the data, after the environment was set.
    assert main(["train", "wine", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=true"
    assert (
        os.environ["TF_DETERMINISTIC_OPS"] == "1" and os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    )
    assert (
        main(
            [
                "train",
                "wine",
                "--no-deterministic",
                "--data-dir",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert os.environ["TF_DETERMINISTIC_OPS"] == "0"


def test_set_determinism_follows_the_switch(monkeypatch):
    """TensorFlow's op determinism is enabled unless TF_DETERMINISTIC_OPS=0."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow backend only")
    import tensorflow as tf

    from training import train as T

    calls = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append(1))
    monkeypatch.setenv("TF_DETERMINISTIC_OPS", "0")
    T.set_determinism(0)
    assert calls == []
    monkeypatch.setenv("TF_DETERMINISTIC_OPS", "1")
    T.set_determinism(0)
    assert calls == [1]
