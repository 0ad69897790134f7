"""The drift monitor on the committed bundles and the real data (skipped where the data is absent).

- **No false alarm:** each model's held-out test rows, replayed through ``/predict`` in
  shuffled passes, over 20 windows of 500 rows: every PSI stays below the 0.2 alert line.
- **Injected shift found within one window:** wine with two inputs +1 sd, seizure with
  chunks of the seizure class only, digit with inverted images and with images shifted
  by 4 pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dlqr import bundle as B
from dlqr import repository
from dlqr.card import get as get_card
from tests.conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "artifacts"
DATA = Path(os.environ.get("DLQR_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="real datasets not found (set DLQR_DATA_DIR)")

ROWS_PER_REQUEST = 50
REQUESTS_PER_WINDOW = 10  # 500 rows: the default DLQR_MONITOR_MIN_ROWS
ALERT_PSI = 0.2


def held_out(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The latest committed bundle's recorded test rows (API units) and targets."""
    from training import recipes
    from training import train as T

    root = repository.latest_dir(ARTIFACTS / name)
    split = B.read_json(root / B.TEST_SPLIT)
    return recipes.get(name).test_rows(split["test_ids"], T.load_dataset(name, DATA))


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    from serving.app import create_app

    app = create_app({"ARTIFACTS_DIR": ARTIFACTS, "MODEL_LOADING": "sync", "VERSION_POLICY": "latest",
                      "MONITOR_WINDOW_REQUESTS": REQUESTS_PER_WINDOW, "MONITOR_WINDOW_SECONDS": 3600})  # fmt: skip
    return app, app.extensions["dlqr_monitor"], app.extensions["dlqr"].plane


def replay(app, plane, name: str, rows: np.ndarray) -> None:
    card = get_card(name)
    client = app.test_client()
    for i in range(0, len(rows), ROWS_PER_REQUEST):
        body = {"instances": [card.instance_from_row(r) for r in rows[i : i + ROWS_PER_REQUEST]]}
        r = client.post(f"/predict/{name}", json=body)
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
    plane.hub.join()


def windows_of(mon, name: str, before: int) -> list:
    return [r for r in mon.history if r.model == name][before:]


@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_held_out_rows_raise_no_alarm_over_20_windows(monitored, name):
    app, mon, plane = monitored
    x, _ = held_out(name)
    rng = np.random.default_rng(0)
    n = 20 * REQUESTS_PER_WINDOW * ROWS_PER_REQUEST
    passes = [x[rng.permutation(len(x))] for _ in range(-(-n // len(x)))]
    before = len([r for r in mon.history if r.model == name])
    replay(app, plane, name, np.concatenate(passes)[:n])
    got = windows_of(mon, name, before)
    assert len(got) == 20 and all(w.rows == 500 for w in got)
    worst = max((v, w_i, f) for w_i, w in enumerate(got) for f, v in w.psi.items())
    print(f"{name}: highest PSI over 20 windows {worst[0]:.4f} ({worst[2]}, window {worst[1]})")
    assert worst[0] < ALERT_PSI


def shifted(name: str, x: np.ndarray, y: np.ndarray, how: str) -> np.ndarray:
    card = get_card(name)
    rng = np.random.default_rng(1)
    if how == "two inputs +1 sd":
        x = x[rng.integers(0, len(x), 500)].copy()
        for f in ("residual_sugar", "ph"):
            i = card.features.index(f)
            x[:, i] += x[:, i].std()
        return x
    if how == "seizure chunks only":
        pos = x[y == 1]
        return pos[rng.integers(0, len(pos), 500)]
    img = x[rng.integers(0, len(x), 500)].reshape(-1, 28, 28)
    if how == "inverted":
        return (255 - img).reshape(-1, 784)
    out = np.zeros_like(img)
    out[:, 4:, 4:] = img[:, :-4, :-4]  # 4 pixels right and down
    return out.reshape(-1, 784)


@pytest.mark.parametrize(
    ("name", "how", "expect"),
    [("wine", "two inputs +1 sd", {"residual_sugar", "ph"}),
     ("seizure", "seizure chunks only", {"prediction"}),
     ("digit", "inverted", {"mean_intensity", "ink_fraction"}),
     ("digit", "shifted", {"centre_of_mass_x", "centre_of_mass_y"})],
)  # fmt: skip
def test_injected_shift_is_found_within_one_window(monitored, name, how, expect):
    app, mon, plane = monitored
    x, y = held_out(name)
    before = len([r for r in mon.history if r.model == name])
    replay(app, plane, name, shifted(name, x, y, how))
    got = windows_of(mon, name, before)
    assert len(got) == 1
    alarmed = {f for f, v in got[0].psi.items() if v > ALERT_PSI}
    top = sorted(got[0].psi, key=lambda f: -got[0].psi[f])[:3]
    print(
        f"{name} {how}: {len(alarmed)} of {len(got[0].psi)} PSI above {ALERT_PSI}; highest "
        + ", ".join(f"{f} {got[0].psi[f]:.2f}" for f in top)
        + f"; prediction {got[0].psi['prediction']:.2f}"
    )
    assert expect <= alarmed
