"""Reference profiles and drift statistics (:mod:`dlqr.drift`), checked against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dlqr import drift as D
from dlqr.card import get as get_card


@pytest.mark.parametrize("shift", [0.0, 0.2, 1.0])
def test_ks_statistic_matches_scipy_on_continuous_data(shift):
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=50_000), rng.normal(shift, 1.0, size=400)
    got = D.ks_statistic(np.percentile(ref, D.PERCENTILES), cur)
    assert got == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=0.012)


def test_ks_statistic_handles_ties_in_the_reference():
    rng = np.random.default_rng(2)
    ref, cur = rng.integers(0, 5, 50_000).astype(float), rng.integers(0, 7, 300).astype(float)
    got = D.ks_statistic(np.percentile(ref, D.PERCENTILES), cur)
    assert got == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=0.012)


def test_psi_by_hand_and_symmetry_of_zero():
    ref, cur = np.array([50, 30, 20]), np.array([20, 30, 50])
    r, c = ref / 100, cur / 100
    assert D.psi(ref, cur) == pytest.approx(float(np.sum((c - r) * np.log(c / r))))
    assert D.psi(ref, ref * 3) == pytest.approx(0.0)
    assert np.isnan(D.psi(ref, np.zeros(3)))


def test_psi_of_a_one_sd_shift_is_large_and_of_a_fresh_sample_small():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=20_000)
    edges = D.decile_edges(ref)
    same = D.psi(D.bin_counts(ref, edges), D.bin_counts(rng.normal(size=1000), edges))
    moved = D.psi(D.bin_counts(ref, edges), D.bin_counts(rng.normal(1.0, 1.0, size=1000), edges))
    assert same < 0.05 < 0.5 < moved


def test_decile_bins_hold_a_tenth_each_and_merge_repeated_cut_points():
    v = np.arange(1000.0)
    edges = D.decile_edges(v)
    assert len(edges) == 9 and set(D.bin_counts(v, edges)) == {100}
    tied = np.r_[np.zeros(800), np.arange(200.0)]
    assert len(D.decile_edges(tied)) < 9
    assert D.bin_counts(tied, D.decile_edges(tied)).sum() == 1000


def test_image_summaries_of_a_known_image():
    img = np.zeros((28, 28))
    img[10:14, 4:6] = 255  # a 2 wide, 4 high block of ink
    s = dict(zip(D.IMAGE_SUMMARIES, D.image_summaries(img.reshape(1, -1), (28, 28), 255)[0], strict=True))
    assert s["mean_intensity"] == pytest.approx(8 / 784)
    assert s["ink_fraction"] == pytest.approx(8 / 784)
    assert (s["centre_of_mass_x"], s["centre_of_mass_y"]) == pytest.approx((4.5, 11.5))
    assert (s["bbox_width"], s["bbox_height"]) == (2, 4)
    blank = D.image_summaries(np.zeros((1, 784)), (28, 28), 255)[0]
    assert blank[2] == blank[3] == 13.5 and blank[4] == blank[5] == 0


def test_digit_card_profiles_summaries_and_other_cards_their_features():
    digit, wine = get_card("digit"), get_card("wine")
    assert D.profile_names(digit) == D.IMAGE_SUMMARIES
    assert D.profile_rows(digit, np.zeros((3, 784))).shape == (3, 6)
    assert D.profile_names(wine) == wine.features
    rows = np.arange(20.0).reshape(2, 10)
    shuffled = list(reversed(wine.features))
    assert np.array_equal(D.profile_rows(wine, rows[:, ::-1], shuffled), rows)


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_build_and_parse_reference(kind):
    name = {"regression": "wine", "binary": "seizure", "multiclass": "digit"}[kind]
    card = get_card(name)
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 256, size=(500, card.input_dim)).astype(float)
    out = rng.random((500, card.output_dim))
    prep = {"features": list(card.features), "target_scaler": {"mean": 10.0, "scale": 1.0},
            "threshold": {"value": 0.4}, "class_labels": [str(i) for i in range(10)]}  # fmt: skip
    doc = D.build_reference(card, rows, out, prep, {"split": "train"})
    ref = D.parse_reference(doc)
    assert ref.rows == 500 and ref.names == D.profile_names(card)
    assert all(f.counts.sum() == 500 for f in ref.features)
    assert ref.prediction.counts.sum() == 500
    assert ref.prediction.numeric == (kind != "multiclass")
    if kind == "binary":
        assert doc["prediction"]["positive_rate"] == pytest.approx(np.mean(out[:, 0] >= 0.4))
    if kind == "multiclass":
        assert ref.prediction.counts.tolist() == np.bincount(out.argmax(1), minlength=10).tolist()


def test_parse_reference_refuses_a_malformed_document():
    with pytest.raises(D.ReferenceError, match="format"):
        D.parse_reference({"format": 99})
    with pytest.raises(D.ReferenceError, match="counts"):
        D.parse_reference({"format": 1, "model": "m", "task": "binary", "rows": 1, "prediction": {},
                           "features": [{"name": "a", "kind": "numeric", "edges": [1.0], "counts": [1]}]})  # fmt: skip
