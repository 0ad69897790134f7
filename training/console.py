"""What ``python -m training train`` prints: the bar verdict and the per-phase table.

Pure functions over the summaries :func:`training.pipeline.run_model` returns, so
the wording and the width are unit-tested without training anything.
"""

from __future__ import annotations

from typing import Any

#: The console width the tables are kept within.
MAX_WIDTH = 100


def _direction(op: str) -> str:
    return "lower is better" if op == "<=" else "higher is better"


def bar_verdict(bars: dict[str, dict[str, Any]]) -> str:
    """``PASS``, or which bars were missed, each with its direction.

    E.g. ``MISSED BAR: mae_scaled 0.2100, needs <= 0.2000 (lower is better)``: for an
    error metric "below bar" would read as good news, so the verdict names the
    comparison instead.
    """
    missed = [
        f"{k} {v['value']:.4f}, needs {v['op']} {v['bar']:.4g} ({_direction(v['op'])})"
        for k, v in bars.items()
        if not v["passed"]
    ]
    return "PASS" if not missed else "MISSED BAR: " + "; ".join(missed)


def summary_table(rows: list[dict[str, Any]], wall_seconds: float | None = None) -> list[str]:
    """One line per model (epochs, timings), then one line per quality bar: ``value op bar ok|MISSED``.

    ``wall_seconds``: the whole run's wall time, printed last (the models overlap, so
    it is less than the sum of their totals).
    """
    lines = ["model    epochs  best  s/epoch  train s  total s  quality bars"]
    pad = " " * 50  # the bars column, under "quality bars"
    for r in rows:
        bars = [
            f"{k} {v['value']:.4f} {v['op']} {v['bar']:.4g} {'ok' if v['passed'] else 'MISSED'}"
            for k, v in r["metrics"]["quality_bars"].items()
        ] or [""]
        lines.append(
            f"{r['model']:<8} {r['epochs_run']:>6} {r['best_epoch']:>5} {r['mean_epoch_seconds'] or 0:>8.2f} "
            f"{r['seconds']:>8.1f} {r['total_seconds']:>8.1f}  {bars[0]}".rstrip()
        )
        lines.extend(pad + b for b in bars[1:])
    total = f"total: {sum(r['total_seconds'] for r in rows):.1f} s"
    lines.append(total + (f", {wall_seconds:.1f} s wall" if wall_seconds is not None else ""))
    return lines


def phase_table(rows: list[dict[str, Any]]) -> list[str]:
    """Seconds per phase, one line per phase and one column per model (fits ~100 columns).

    Phases as rows, not columns: a model has a dozen phases (load, prepare, fit,
    the book-split ones...) but ``train all`` has three models, so this stays narrow.
    """
    phases = list(dict.fromkeys(k for r in rows for k in r.get("phase_seconds", {})))
    if not phases:
        return []
    width = max(len("phase seconds"), *(len(p) for p in phases))
    names = [r["model"] for r in rows]
    col = max(9, *(len(n) for n in names))
    lines = [f"{'phase seconds':<{width}}" + "".join(f"  {n:>{col}}" for n in names)]
    for ph in phases:
        cells = "".join(f"  {r.get('phase_seconds', {}).get(ph, 0.0):>{col}.1f}" for r in rows)
        lines.append(f"{ph:<{width}}{cells}")
    return lines
