"""What `train` prints: bar verdicts that name their direction, tables within 100 columns."""

from __future__ import annotations

from training import console

PHASES = [
    "load", "prepare", "fit", "evaluate", "baseline", "book_wait", "book_prepare", "book_fit",
    "book_evaluate", "book_baseline", "report", "export",
]  # fmt: skip


def _row(model, passed=True):
    bars = {
        "mae_scaled": {"value": 0.2039, "bar": 0.22, "op": "<=", "passed": passed},
        "mae_scaled_vs_baseline": {"value": 0.2039, "bar": 0.2213, "op": "<=", "passed": True},
    }
    return {
        "model": model,
        "epochs_run": 120,
        "best_epoch": 97,
        "mean_epoch_seconds": 0.52,
        "seconds": 62.4,
        "total_seconds": 80.1,
        "metrics": {"quality_bars": bars},
        "phase_seconds": {p: 123.4 for p in PHASES},
    }


def test_verdict_pass():
    assert console.bar_verdict(_row("wine")["metrics"]["quality_bars"]) == "PASS"


def test_verdict_for_an_error_metric_says_lower_is_better():
    bars = {"mae_scaled": {"value": 0.2301, "bar": 0.22, "op": "<=", "passed": False}}
    v = console.bar_verdict(bars)
    assert v == "MISSED BAR: mae_scaled 0.2301, needs <= 0.22 (lower is better)"
    assert "BELOW" not in v


def test_verdict_for_a_score_says_higher_is_better_and_lists_every_miss():
    bars = {
        "accuracy": {"value": 0.979, "bar": 0.98, "op": ">=", "passed": False},
        "roc_auc": {"value": 0.995, "bar": 0.996, "op": ">=", "passed": False},
        "f1": {"value": 0.9, "bar": 0.5, "op": ">=", "passed": True},
    }
    v = console.bar_verdict(bars)
    assert v.count("higher is better") == 2 and "accuracy 0.9790" in v and "f1" not in v


def test_phase_table_fits_100_columns_with_every_phase_and_model():
    rows = [_row("wine"), _row("seizure"), _row("digit")]
    lines = console.phase_table(rows)
    assert max(len(line) for line in lines) <= console.MAX_WIDTH
    assert lines[0].split()[-3:] == ["wine", "seizure", "digit"]
    assert [line.split()[0] for line in lines[1:]] == PHASES
    assert all(line.split()[1:] == ["123.4"] * 3 for line in lines[1:])


def test_phase_table_shows_zero_for_a_phase_one_model_lacks():
    a, b = _row("wine"), _row("digit")
    del b["phase_seconds"]["book_fit"]
    line = next(x for x in console.phase_table([a, b]) if x.startswith("book_fit"))
    assert line.split()[1:] == ["123.4", "0.0"]
    assert console.phase_table([{"model": "wine"}]) == []


def test_summary_table_fits_100_columns_and_marks_missed_bars():
    lines = console.summary_table([_row("wine", passed=False), _row("digit")])
    assert max(len(line) for line in lines) <= console.MAX_WIDTH
    assert "mae_scaled 0.2039 <= 0.22 MISSED" in lines[1]
    assert lines[2].strip() == "mae_scaled_vs_baseline 0.2039 <= 0.2213 ok"
    assert lines[-1] == "total: 160.2 s"
    assert console.summary_table([_row("wine")], 70.04)[-1] == "total: 80.1 s, 70.0 s wall"
