"""``add_reference``: reference.json added to a sealed bundle, every other file's bytes kept."""

from __future__ import annotations

import numpy as np

from dlqr import bundle as B
from dlqr import drift
from tests.serving.bundles import sample_rows, write_bundle
from training import cli
from training import export as X


def test_add_reference_reseals_and_keeps_the_model_bytes(tmp_path):
    dest = write_bundle(tmp_path / "artifacts" / "wine", "wine")
    before = B.verify_bundle(dest)["files"]
    rows = sample_rows("wine", 300)
    doc = X.add_reference(dest, rows)
    after = B.verify_bundle(dest)["files"]  # the new manifest seals every file
    assert after.pop(drift.REFERENCE_FILE) == B.sha256_file(dest / drift.REFERENCE_FILE)
    assert after == before
    ref = drift.parse_reference(B.read_json(dest / drift.REFERENCE_FILE))
    assert ref.rows == 300 and doc["source"]["rows"] == 300
    assert ref.features[0].counts.sum() == 300
    assert not list(dest.parent.glob(".*tmp-*"))  # no staging directory left behind


def test_add_reference_without_onnx_is_refused_and_leaves_the_bundle(tmp_path, capsys):
    dest = write_bundle(tmp_path / "artifacts" / "wine", "wine", skip_onnx=True)
    before = B.verify_bundle(dest)
    assert cli.main(["add-reference", str(dest)]) == 2
    assert "add-onnx" in capsys.readouterr().err
    assert B.verify_bundle(dest) == before


def test_training_reference_profiles_the_train_split():
    from training.pipeline import training_reference
    from training.train import Prepared

    raw = sample_rows("seizure", 200)
    p = Prepared("seizure", {"train": raw}, {}, {}, {}, {}, {"threshold": {"value": 0.5}}, {}, {})
    doc = training_reference(p, np.linspace(0, 1, 200)[:, None])
    assert doc["rows"] == 200 and doc["prediction"]["positive_rate"] == 0.5
    assert len(doc["features"]) == 178
