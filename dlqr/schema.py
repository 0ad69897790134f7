"""pydantic building blocks for instance schemas, shared by the cards.

Validation is strict: no string-to-number coercion, no booleans as numbers,
extra keys refused (so a misspelt feature such as ``pH`` is an error rather
than ignored), and every float finite (JSON ``NaN``/``Infinity`` refused).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field

#: Magnitude cap on real-valued inputs. Far outside any physical value a card describes,
#: it keeps the float32 network arithmetic finite (a 1e300 input would overflow).
MAX_ABS = 1e6

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

#: A finite real bounded to +-MAX_ABS.
Real = Annotated[float, Field(ge=-MAX_ABS, le=MAX_ABS)]


def bounded_field(description: str, **bounds: float) -> tuple[type, Any]:
    """A required float field with physical bounds (``ge``/``gt``/``le``), capped at +-MAX_ABS."""
    bounds.setdefault("le", MAX_ABS)
    if "ge" not in bounds and "gt" not in bounds:
        bounds["ge"] = -MAX_ABS
    return (float, Field(..., description=description, **bounds))
