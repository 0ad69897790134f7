"""Settings: defaults, environment parsing (pydantic-settings) and validation errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.settings import Settings, SettingsError, default_artifacts_dir


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Settings read os.environ: start every test from no DLQR_* variable at all."""
    for key in list(os.environ):
        if key.startswith("DLQR_"):
            monkeypatch.delenv(key)
    return monkeypatch


def set_env(monkeypatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_defaults_match_the_documented_contract():
    s = Settings.from_env()
    assert (s.max_batch, s.workers, s.threads, s.bind) == (256, 2, 1, "127.0.0.1:8000")
    assert (s.worker_class, s.read_timeout, s.request_timeout, s.max_inflight) == ("gevent", 5, 10, 32)
    assert s.max_request_pixels == 4096 * 4096 and s.control_socket == ""  # one full-size image; no socket
    assert s.log_level == "INFO"
    assert s.artifacts_dir == default_artifacts_dir()
    assert (s.ort_threads, s.keras_crosscheck, s.model_names) == (1, False, None)


def test_reads_every_variable(monkeypatch):
    set_env(
        monkeypatch,
        {
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
            "DLQR_ORT_THREADS": "3",
            "DLQR_KERAS_CROSSCHECK": "1",
            "DLQR_MODELS": " wine, digit ,",
            "DLQR_WORKER_CLASS": "gthread",
            "DLQR_WORKER_CONNECTIONS": "100",
            "DLQR_READ_TIMEOUT": "3",
            "DLQR_REQUEST_TIMEOUT": "7",
            "DLQR_MAX_INFLIGHT": "4",
            "DLQR_MAX_REQUEST_PIXELS": "2000000",
            "DLQR_CONTROL_SOCKET": "/run/dlqr/gunicorn.ctl",
        },
    )
    s = Settings.from_env()
    assert s.artifacts_dir == Path("/srv/models")
    assert (s.max_batch, s.max_body_bytes, s.log_level, s.bind) == (64, 1 << 20, "DEBUG", "0.0.0.0:8000")
    assert (s.workers, s.threads, s.timeout, s.graceful_timeout, s.keepalive) == (4, 2, 60, 10, 5)
    assert s.max_image_pixels == 1_000_000
    assert (s.ort_threads, s.keras_crosscheck, s.model_names) == (3, True, ("wine", "digit"))
    assert (s.worker_class, s.worker_connections, s.read_timeout, s.request_timeout) == ("gthread", 100, 3, 7)
    assert (s.max_inflight, s.max_request_pixels, s.control_socket) == (
        4,
        2_000_000,
        "/run/dlqr/gunicorn.ctl",
    )


def test_overrides_win_over_the_environment(monkeypatch):
    set_env(monkeypatch, {"DLQR_MAX_BATCH": "64", "DLQR_WORKERS": "8"})
    s = Settings.from_env(max_batch=4)
    assert (s.max_batch, s.workers) == (4, 8)


@pytest.mark.parametrize(
    ("value", "expected"), [("0", False), ("false", False), ("true", True), ("yes", True)]
)
def test_keras_crosscheck_flag(monkeypatch, value, expected):
    monkeypatch.setenv("DLQR_KERAS_CROSSCHECK", value)
    assert Settings.from_env().keras_crosscheck is expected


def test_empty_values_mean_default(monkeypatch):
    set_env(monkeypatch, {"DLQR_MAX_BATCH": "  ", "DLQR_BIND": "", "DLQR_MODELS": " "})
    s = Settings.from_env()
    assert (s.max_batch, s.bind, s.model_names) == (256, "127.0.0.1:8000", None)


def test_other_variables_are_ignored(monkeypatch):
    set_env(monkeypatch, {"DLQR_DATA_DIR": "/data", "DLQR_SOMETHING_ELSE": "x"})
    assert Settings.from_env().max_batch == 256


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
        ("DLQR_ORT_THREADS", "0", "[1, 64]"),
        ("DLQR_KERAS_CROSSCHECK", "maybe", "DLQR_KERAS_CROSSCHECK"),
        ("DLQR_WORKER_CLASS", "eventlet", "gevent, gthread, sync"),
        ("DLQR_THREADS", "4", "only DLQR_WORKER_CLASS=gthread"),
        ("DLQR_READ_TIMEOUT", "0", "DLQR_READ_TIMEOUT"),
        ("DLQR_MAX_INFLIGHT", "0", "DLQR_MAX_INFLIGHT"),
        ("DLQR_MAX_REQUEST_PIXELS", "10", "DLQR_MAX_REQUEST_PIXELS"),
        ("DLQR_REQUEST_TIMEOUT", "30", "below DLQR_TIMEOUT"),
        ("DLQR_CONTROL_SOCKET", "gunicorn.ctl", "absolute path"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, key, value, fragment):
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as exc:
        Settings.from_env()
    msg = str(exc.value)
    assert key in msg and fragment in msg
    assert "\n" not in msg  # one line for the operator


def test_unknown_model_names_are_refused_by_the_settings(monkeypatch):
    """Checked by Settings itself, so gunicorn.conf.py stops the master before any worker boots."""
    monkeypatch.setenv("DLQR_MODELS", "nope")
    with pytest.raises(SettingsError) as exc:
        Settings.from_env()
    assert (
        str(exc.value) == "DLQR_MODELS='nope': no model card named 'nope' (registered: wine, seizure, digit)"
    )
    monkeypatch.setenv("DLQR_MODELS", "seizure")
    assert Settings.from_env().model_names == ("seizure",)


def test_error_message_quotes_the_value(monkeypatch):
    monkeypatch.setenv("DLQR_WORKERS", "two")
    with pytest.raises(SettingsError) as exc:
        Settings.from_env()
    assert str(exc.value) == "DLQR_WORKERS='two': must be an integer"


def test_ipv6_and_unix_binds_are_accepted(monkeypatch):
    monkeypatch.setenv("DLQR_BIND", "[::1]:8000")
    assert Settings.from_env().bind == "[::1]:8000"
    monkeypatch.setenv("DLQR_BIND", "unix:/run/dlqr.sock")
    assert Settings.from_env().bind.startswith("unix:")


def test_missing_artifacts_dir_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DLQR_ARTIFACTS_DIR", str(tmp_path / "nope"))
    s = Settings.from_env()
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


def test_unknown_model_name_is_a_clear_error(tmp_path, monkeypatch):
    from serving.app import create_app

    monkeypatch.setenv("DLQR_MODELS", "wine,nope")
    with pytest.raises(SettingsError) as exc:
        create_app({"ARTIFACTS_DIR": tmp_path, "MODEL_LOADING": "none"})
    msg = str(exc.value)
    assert msg.startswith("DLQR_MODELS='wine,nope': no model card named 'nope'")
    assert "registered: wine, seizure, digit" in msg
    with pytest.raises(SettingsError, match="no model card named 'beer'"):
        create_app({"ARTIFACTS_DIR": tmp_path, "MODEL_LOADING": "none", "MODELS": ["beer"]})


def test_models_setting_selects_what_is_served(tmp_path, monkeypatch):
    from serving.app import create_app

    monkeypatch.setenv("DLQR_MODELS", "digit,wine")
    app = create_app({"ARTIFACTS_DIR": tmp_path, "MODEL_LOADING": "none"})
    assert app.extensions["dlqr"].registry.names == ("digit", "wine")
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert {"/predict/digit", "/predict/wine"} <= rules and "/predict/seizure" not in rules
    # the MODELS config key (a list) overrides the environment
    app = create_app({"ARTIFACTS_DIR": tmp_path, "MODEL_LOADING": "none", "MODELS": ("seizure",)})
    assert app.extensions["dlqr"].registry.names == ("seizure",)
    assert app.extensions["dlqr"].settings.model_names == ("seizure",)
