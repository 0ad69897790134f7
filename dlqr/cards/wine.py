"""Card: wine, regression of % alcohol from 10 physico-chemical inputs (UCI white wine).

``COLUMNS`` maps API names to the UCI CSV's column names (training reads the
CSV with them); ``quality`` is a sensory score and never an input.
"""

from __future__ import annotations

from pydantic import ConfigDict, create_model

from dlqr.card import ModelCard
from dlqr.schema import STRICT, bounded_field
from dlqr.tasks import Regression

#: (API name, UCI CSV column, description with units, physical bounds), in model input order.
COLUMNS: tuple[tuple[str, str, str, dict[str, float]], ...] = (
    ("fixed_acidity", "fixed acidity", "Fixed acidity, g(tartaric acid)/dm3", {"ge": 0}),
    ("volatile_acidity", "volatile acidity", "Volatile acidity, g(acetic acid)/dm3", {"ge": 0}),
    ("citric_acid", "citric acid", "Citric acid, g/dm3", {"ge": 0}),
    ("residual_sugar", "residual sugar", "Residual sugar, g/dm3", {"ge": 0}),
    ("chlorides", "chlorides", "Chlorides, g(sodium chloride)/dm3", {"ge": 0}),
    ("free_sulfur_dioxide", "free sulfur dioxide", "Free sulfur dioxide, mg/dm3", {"ge": 0}),
    ("total_sulfur_dioxide", "total sulfur dioxide", "Total sulfur dioxide, mg/dm3", {"ge": 0}),
    ("density", "density", "Density, g/cm3 (must be > 0)", {"gt": 0}),
    ("ph", "pH", "pH (0-14)", {"ge": 0, "le": 14}),
    ("sulphates", "sulphates", "Sulphates, g(potassium sulphate)/dm3", {"ge": 0}),
)
FEATURES = tuple(c[0] for c in COLUMNS)
CSV_COLUMNS = tuple(c[1] for c in COLUMNS)
TARGET, TARGET_CSV_COLUMN, UNITS = "alcohol", "alcohol", "% vol"
#: Sensory score: present in the CSV, deliberately never an input.
EXCLUDED_COLUMNS = ("quality",)

#: A real row of the UCI white-wine table (row 0), used as the documented example.
EXAMPLE = {
    "fixed_acidity": 7.0,
    "volatile_acidity": 0.27,
    "citric_acid": 0.36,
    "residual_sugar": 20.7,
    "chlorides": 0.045,
    "free_sulfur_dioxide": 45.0,
    "total_sulfur_dioxide": 170.0,
    "density": 1.001,
    "ph": 3.0,
    "sulphates": 0.45,
}

WineInstance = create_model(
    "WineInstance",
    __config__=ConfigDict(
        **STRICT,
        title="WineInstance",
        json_schema_extra={
            "description": "One white wine: the 10 physico-chemical measurements (snake_case names).",
            "examples": [EXAMPLE],
        },
    ),
    **{name: bounded_field(desc, **bounds) for name, _, desc, bounds in COLUMNS},
)

CARD = ModelCard(
    name="wine",
    title="White wine alcohol",
    description="Regression of alcohol content (% vol) from 10 physico-chemical measurements of a white "
    "wine (UCI Wine Quality, Cortez et al. 2009).",
    task=Regression(
        target=TARGET,
        units=UNITS,
        description="Predicted alcohol content, % vol",
        # white wines: ~8-14.2 % vol
        value_buckets=(8.0, 8.5, 9.0, 9.5, 10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0, 13.5, 14.0, 15.0),
    ),
    instance=WineInstance,
    features=FEATURES,
    example=EXAMPLE,
    extra={"units": UNITS, "target": TARGET},
    # % vol: about 1/40 of the MAE; two retrains of one recipe differ by less
    promotion_tolerance={"mae": 0.005, "rmse": 0.005, "mae_scaled": 0.004},
)
