"""Settings: defaults, environment parsing and validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.settings import Settings, SettingsError, default_artifacts_dir


def test_defaults_match_the_documented_contract():
    s = Settings.from_env({})
    assert (s.max_batch, s.workers, s.threads, s.bind) == (256, 2, 1, "127.0.0.1:8000")
    assert (s.worker_class, s.read_timeout, s.request_timeout, s.max_inflight) == ("gevent", 5, 10, 32)
    assert s.max_request_pixels == 4096 * 4096 and s.control_socket == ""  # one full-size image; no socket
    assert s.log_level == "INFO"
    assert s.artifacts_dir == default_artifacts_dir()


def test_reads_every_variable():
    env = {
        "DLQR_ARTIFACTS_DIR": "/srv/models",
        "DLQR_MAX_BATCH": "64",
        "DLQR_MAX_BODY_BYTES": "1_048_576",
        "DLQR_LOG_LEVEL": "debug",
        "DLQR_BIND": "0.0.0.0:8000",
        "DLQR_WORKERS": "4",
        "DLQR_THREADS": "2",
        "DLQR_TIMEOUT": "60",
        "DLQR_GRACEFUL_TIMEOUT": "10",
        "DLQR_KEEPALIVE": "5",
        "DLQR_MAX_IMAGE_PIXELS": "1000000",
        "DLQR_WORKER_CLASS": "gthread",
        "DLQR_WORKER_CONNECTIONS": "100",
        "DLQR_READ_TIMEOUT": "3",
        "DLQR_REQUEST_TIMEOUT": "7",
        "DLQR_MAX_INFLIGHT": "4",
        "DLQR_MAX_REQUEST_PIXELS": "2000000",
        "DLQR_CONTROL_SOCKET": "/run/dlqr/gunicorn.ctl",
    }
    s = Settings.from_env(env)
    assert s.artifacts_dir == Path("/srv/models")
    assert (s.max_batch, s.max_body_bytes, s.log_level, s.bind) == (64, 1 << 20, "DEBUG", "0.0.0.0:8000")
    assert (s.workers, s.threads, s.timeout, s.graceful_timeout, s.keepalive) == (4, 2, 60, 10, 5)
    assert s.max_image_pixels == 1_000_000
    assert (s.worker_class, s.worker_connections, s.read_timeout, s.request_timeout) == ("gthread", 100, 3, 7)
    assert (s.max_inflight, s.max_request_pixels, s.control_socket) == (
        4,
        2_000_000,
        "/run/dlqr/gunicorn.ctl",
    )


def test_empty_values_mean_default():
    assert Settings.from_env({"DLQR_MAX_BATCH": "  ", "DLQR_BIND": ""}).max_batch == 256


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("DLQR_MAX_BATCH", "two", "must be an integer"),
        ("DLQR_MAX_BATCH", "0", "[1, 100000]"),
        ("DLQR_WORKERS", "-1", "DLQR_WORKERS"),
        ("DLQR_MAX_BODY_BYTES", "10", "DLQR_MAX_BODY_BYTES"),
        ("DLQR_LOG_LEVEL", "LOUD", "DLQR_LOG_LEVEL"),
        ("DLQR_BIND", "localhost", "HOST:PORT"),
        ("DLQR_BIND", "127.0.0.1:99999", "HOST:PORT"),
        ("DLQR_BIND", "unix:", "unix socket"),
        ("DLQR_TIMEOUT", "1.5", "must be an integer"),
        ("DLQR_WORKER_CLASS", "eventlet", "gevent, gthread, sync"),
        ("DLQR_THREADS", "4", "only DLQR_WORKER_CLASS=gthread"),
        ("DLQR_READ_TIMEOUT", "0", "DLQR_READ_TIMEOUT"),
        ("DLQR_MAX_INFLIGHT", "0", "DLQR_MAX_INFLIGHT"),
        ("DLQR_MAX_REQUEST_PIXELS", "10", "DLQR_MAX_REQUEST_PIXELS"),
        ("DLQR_REQUEST_TIMEOUT", "30", "below DLQR_TIMEOUT"),
        ("DLQR_CONTROL_SOCKET", "gunicorn.ctl", "absolute path"),
    ],
)
def test_invalid_values_name_the_variable(key, value, fragment):
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({key: value})
    assert key in str(exc.value) and fragment in str(exc.value)


def test_ipv6_and_unix_binds_are_accepted():
    assert Settings.from_env({"DLQR_BIND": "[::1]:8000"}).bind == "[::1]:8000"
    assert Settings.from_env({"DLQR_BIND": "unix:/run/dlqr.sock"}).bind.startswith("unix:")


def test_missing_artifacts_dir_is_a_clear_error(tmp_path):
    s = Settings.from_env({"DLQR_ARTIFACTS_DIR": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="DLQR_ARTIFACTS_DIR"):
        s.check_artifacts_dir()


def test_create_app_refuses_bad_settings(tmp_path, monkeypatch):
    from serving.app import create_app

    monkeypatch.setenv("DLQR_MAX_BATCH", "lots")
    with pytest.raises(SettingsError, match="DLQR_MAX_BATCH"):
        create_app({"ARTIFACTS_DIR": tmp_path, "MODEL_LOADING": "none"})
    monkeypatch.delenv("DLQR_MAX_BATCH")
    with pytest.raises(SettingsError, match="MODEL_LOADING"):
        create_app({"ARTIFACTS_DIR": tmp_path, "MODEL_LOADING": "eager"})
