"""Training recipes: one TOML file per model (and per named recipe), CLI-overridable."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from dlqr.card import names as model_names

REQUIRED = {
    "model": ("hidden", "activation", "dropout", "l2"),
    "train": (
        "seed",
        "loss",
        "optimizer",
        "learning_rate",
        "batch_size",
        "epochs",
        "monitor",
        "monitor_mode",
    ),
}


class ConfigError(ValueError):
    """A recipe file is missing, malformed or names the wrong model."""


def available_recipes() -> list[str]:
    """Names of the recipe files shipped with the package (e.g. 'wine', 'wine-book')."""
    files = resources.files("training") / "configs"
    return sorted(p.name.removesuffix(".toml") for p in files.iterdir() if p.name.endswith(".toml"))


def load_config(model: str, path: str | Path | None = None, recipe: str | None = None) -> dict[str, Any]:
    """Load the model's recipe: an explicit file, a named shipped recipe, or the default."""
    if model not in model_names():
        raise ConfigError(f"unknown model {model!r}; choose from {', '.join(model_names())}")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        text = p.read_text(encoding="utf-8")
    else:
        name = model if recipe in (None, "default") else f"{model}-{recipe}"
        res = resources.files("training") / "configs" / f"{name}.toml"
        if not res.is_file():
            raise ConfigError(f"no recipe {recipe!r} for {model}; shipped: {', '.join(available_recipes())}")
        text = res.read_text(encoding="utf-8")
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path or name}: {exc}") from None
    if cfg.get("name") != model:
        raise ConfigError(f"config is for model {cfg.get('name')!r}, not {model!r}")
    for section, keys in REQUIRED.items():
        missing = [k for k in keys if k not in cfg.get(section, {})]
        if missing:
            raise ConfigError(f"config [{section}] lacks {', '.join(missing)}")
    return cfg


def apply_overrides(cfg: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Return a copy with [train] values replaced where an override is not None."""
    out = copy.deepcopy(cfg)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("epochs", "batch_size", "steps_per_execution", "early_stopping_patience") and int(
            value
        ) < (0 if key == "early_stopping_patience" else 1):
            raise ConfigError(f"--{key.replace('_', '-')} must be positive, got {value}")
        if key == "learning_rate" and not float(value) > 0:
            raise ConfigError(f"--learning-rate must be > 0, got {value}")
        if key == "seed":
            out["split"]["seed"] = int(value)
        out["train"][key] = value
    return out
