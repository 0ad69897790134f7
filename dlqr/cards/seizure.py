"""Card: seizure, binary classification of one 178-sample EEG chunk (UCI Epileptic Seizure Recognition).

UCI's ``y == 1`` is a seizure; 2..5 are not. The chunk is columns X1..X178 of
the table: about one second at 173.61 Hz, in microvolts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field

from dlqr.card import ModelCard
from dlqr.schema import STRICT, Real
from dlqr.tasks import Binary

N_SAMPLES = 178
POSITIVE_LABEL = 1
CLASS_LABELS = ("no_seizure", "seizure")
FEATURES = tuple(f"X{i}" for i in range(1, N_SAMPLES + 1))


class SeizureInstance(BaseModel):
    """One EEG chunk: 178 consecutive samples (about 1 s at 173.61 Hz), in microvolts."""

    model_config = STRICT
    eeg: Annotated[
        list[Real],
        Field(
            min_length=N_SAMPLES,
            max_length=N_SAMPLES,
            description=f"{N_SAMPLES} finite EEG samples, columns X1..X{N_SAMPLES} of the UCI table",
        ),
    ]


def _rows(instances: Sequence[Any], features: Sequence[str]) -> np.ndarray:
    # The samples are a time series: the API's order is the model's order (X1..X178).
    return np.array([inst.eeg for inst in instances], dtype=np.float64)


def _instance(card: ModelCard, row: np.ndarray, features: Sequence[str]) -> dict[str, Any]:
    row = np.asarray(row, dtype=np.float64)
    if np.all(np.abs(row) < 2**53) and np.all(row == np.trunc(row)):  # UCI samples are integers
        return {"eeg": row.astype(np.int64).tolist()}  # exact here, and ~10x faster per row
    return {"eeg": [int(v) if v.is_integer() else v for v in row.tolist()]}


CARD = ModelCard(
    name="seizure",
    title="EEG seizure detection",
    description="Binary classification of one 178-sample EEG chunk (UCI Epileptic Seizure Recognition, "
    "after Andrzejak et al. 2001): probability of a seizure and the decision at the bundle's operating "
    "point. Research data from one public dataset; not a clinical device.",
    task=Binary(decision="seizure", description="a seizure"),
    instance=SeizureInstance,
    features=FEATURES,
    example={"eeg": [int(80 * np.sin(i / 4)) for i in range(N_SAMPLES)]},
    to_rows=_rows,
    to_instance=_instance,
    input_name="eeg",
    extra={"class_labels": list(CLASS_LABELS), "sampling_rate_hz": 173.61, "units": "microvolt"},
    # a few of the 1,150 test segments (accuracy 0.003 = 3.5 segments)
    promotion_tolerance={"roc_auc": 0.002, "accuracy": 0.003, "f1": 0.01},
)
