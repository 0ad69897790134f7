"""Single source of truth for the three models' inputs and outputs.

Training (column selection, feature order, class labels) and serving (pydantic
schemas, post-processing, metric labels) both import from here, so a feature
rename or a shape change cannot silently diverge between the two halves.
This module must stay import-light: no numpy, no keras.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAMES: tuple[str, ...] = ("wine", "seizure", "digit")

#: Version of the on-disk bundle layout (manifest/preprocessing keys).
BUNDLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class WineSpec:
    """Wine: regress % alcohol from the 10 physico-chemical inputs."""

    # (API name, column name in the UCI CSV) in model input order.
    columns: tuple[tuple[str, str], ...] = (
        ("fixed_acidity", "fixed acidity"),
        ("volatile_acidity", "volatile acidity"),
        ("citric_acid", "citric acid"),
        ("residual_sugar", "residual sugar"),
        ("chlorides", "chlorides"),
        ("free_sulfur_dioxide", "free sulfur dioxide"),
        ("total_sulfur_dioxide", "total sulfur dioxide"),
        ("density", "density"),
        ("ph", "pH"),
        ("sulphates", "sulphates"),
    )
    target: tuple[str, str] = ("alcohol", "alcohol")
    #: Sensory score: present in the CSV, deliberately never an input.
    excluded: tuple[str, ...] = ("quality",)
    units: str = "% vol"

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(api for api, _ in self.columns)

    @property
    def csv_columns(self) -> tuple[str, ...]:
        return tuple(csv for _, csv in self.columns)


@dataclass(frozen=True)
class SeizureSpec:
    """Seizure: binary classification of one 178-sample EEG chunk."""

    n_samples: int = 178
    positive_label: int = 1  # UCI y == 1 is a seizure; 2..5 are not
    class_labels: tuple[str, ...] = ("no_seizure", "seizure")

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f"X{i}" for i in range(1, self.n_samples + 1))


@dataclass(frozen=True)
class DigitSpec:
    """Digit: MNIST 28x28 grey image, flattened to 784, 10-way softmax."""

    height: int = 28
    width: int = 28
    pixel_max: int = 255
    class_labels: tuple[str, ...] = tuple(str(d) for d in range(10))

    @property
    def n_pixels(self) -> int:
        return self.height * self.width


WINE = WineSpec()
SEIZURE = SeizureSpec()
DIGIT = DigitSpec()

#: Learning task of each model, which selects its post-processing.
TASKS: dict[str, str] = {"wine": "regression", "seizure": "binary", "digit": "multiclass"}

#: Number of model inputs per model.
INPUT_DIMS: dict[str, int] = {
    "wine": len(WINE.columns),
    "seizure": SEIZURE.n_samples,
    "digit": DIGIT.n_pixels,
}

#: Number of model outputs per model.
OUTPUT_DIMS: dict[str, int] = {"wine": 1, "seizure": 1, "digit": len(DIGIT.class_labels)}
