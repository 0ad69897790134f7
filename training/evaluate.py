"""Evaluation: metrics per split, the seizure operating point, and report plots.

Metric functions are pure NumPy/scikit-learn over arrays so they can be unit
tested without a model, and re-run from a bundle (``python -m training evaluate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# ----------------------------------------------------------------- metrics


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, target_scale: float) -> dict[str, float]:
    """MAE/RMSE in target units (% vol) and in scaled units (what the book reports)."""
    err = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    mae, rmse = float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2)))
    ss_tot = float(np.sum((y_true - np.mean(y_true)) ** 2))
    return {
        "n": int(len(err)),
        "mae": mae,
        "rmse": rmse,
        "mae_scaled": mae / target_scale,
        "rmse_scaled": rmse / target_scale,
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
    }


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by scikit-learn's ``roc_auc_score``; NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    if y_true.size == 0 or y_true.min() == y_true.max():
        return float("nan")
    return float(roc_auc_score(y_true, np.asarray(scores, dtype=np.float64)))


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC AUC plus thresholded accuracy/precision/recall/F1, confusion matrix and report."""
    from sklearn.metrics import classification_report

    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(prob) >= threshold).astype(int)
    tp = int(np.sum((pred == 1) & (y_true == 1)))
    tn = int(np.sum((pred == 0) & (y_true == 0)))
    fp = int(np.sum((pred == 1) & (y_true == 0)))
    fn = int(np.sum((pred == 0) & (y_true == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": int(len(y_true)),
        "roc_auc": roc_auc(y_true, prob),
        "threshold": float(threshold),
        "accuracy": (tp + tn) / len(y_true),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion_matrix": {"labels": ["no_seizure", "seizure"], "matrix": [[tn, fp], [fn, tp]]},
        "classification_report": classification_report(
            y_true,
            pred,
            labels=[0, 1],
            target_names=["no_seizure", "seizure"],
            output_dict=True,
            zero_division=0,
        ),
    }


def multiclass_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class report and confusion matrix for the digit model."""
    from sklearn.metrics import classification_report, confusion_matrix

    pred = np.argmax(probs, axis=1)
    labels = list(range(probs.shape[1]))
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(pred == y_true)),
        "confusion_matrix": {
            "labels": [str(i) for i in labels],
            "matrix": confusion_matrix(y_true, pred, labels=labels).tolist(),
        },
        "classification_report": classification_report(
            y_true,
            pred,
            labels=labels,
            target_names=[str(i) for i in labels],
            output_dict=True,
            zero_division=0,
        ),
    }


# ---------------------------------------------------------- operating point


def choose_threshold(
    y_true: np.ndarray, prob: np.ndarray, policy: str = "max_f1", min_recall: float = 0.95
) -> dict[str, Any]:
    """Pick the seizure decision threshold on validation data only.

    ``max_f1``: the threshold maximising F1 (ties: the highest threshold).
    ``min_recall``: the highest threshold whose recall is still >= ``min_recall``.
    Candidates are the distinct predicted probabilities (decision is ``p >= t``).
    """
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(prob, dtype=np.float64)
    if y.sum() == 0 or (~y).sum() == 0:
        raise ValueError("threshold selection needs both classes in the validation split")
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    tps = np.cumsum(y_sorted)
    fps = np.cumsum(~y_sorted)
    # Only the last index of each run of equal scores is a valid cut.
    last = np.r_[np.flatnonzero(np.diff(p_sorted) != 0), len(p_sorted) - 1]
    thr, tp, fp = p_sorted[last], tps[last], fps[last]
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    if policy == "max_f1":
        best = np.flatnonzero(f1 == f1.max())[0]  # thresholds descend: first = highest
    elif policy == "min_recall":
        if not 0 < min_recall <= 1:
            raise ValueError("min_recall must be in (0, 1]")
        ok = np.flatnonzero(recall >= min_recall)
        best = ok[0]  # recall is non-decreasing as the threshold drops; ok is never empty (recall reaches 1)
    else:
        raise ValueError(f"unknown operating-point policy {policy!r}; use 'max_f1' or 'min_recall'")
    return {
        "value": float(thr[best]),
        "policy": policy,
        "min_recall": float(min_recall) if policy == "min_recall" else None,
        "val_precision": float(precision[best]),
        "val_recall": float(recall[best]),
        "val_f1": float(f1[best]),
    }


# ------------------------------------------------------------------ plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless; never opens a window
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: dict[str, list[float]], path: Path, title: str) -> None:
    """Training curves: every logged metric with its val_ counterpart."""
    plt = _plt()
    keys = [k for k in history if not k.startswith("val_") and k not in ("epoch", "learning_rate")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        ax.plot(history[k], label=f"train {k}")
        if f"val_{k}" in history:
            ax.plot(history[f"val_{k}"], label=f"val {k}")
        ax.set_xlabel("epoch")
        ax.set_title(k)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_wine(y_true: np.ndarray, y_pred: np.ndarray, hist_path: Path, scatter_path: Path) -> None:
    """The book's histogram of predicted vs actual alcohol (validation), and a scatter."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(min(y_true.min(), y_pred.min()), max(y_true.max(), y_pred.max()), 30)
    ax.hist(y_true, bins=bins, alpha=0.6, label="actual")
    ax.hist(y_pred, bins=bins, alpha=0.6, label="predicted")
    ax.set_xlabel("alcohol (% vol)")
    ax.set_ylabel("wines")
    ax.set_title("Validation: predicted vs actual alcohol")
    ax.legend()
    fig.tight_layout()
    fig.savefig(hist_path, dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=6, alpha=0.5)
    lo, hi = float(bins[0]), float(bins[-1])
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("actual alcohol (% vol)")
    ax.set_ylabel("predicted alcohol (% vol)")
    ax.set_title("Validation: predicted vs actual")
    fig.tight_layout()
    fig.savefig(scatter_path, dpi=90)
    plt.close(fig)


def plot_roc(y_true: np.ndarray, prob: np.ndarray, threshold: float, path: Path, title: str) -> None:
    """ROC curve with the chosen operating point marked."""
    from sklearn.metrics import roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(y_true, prob)
    pred = prob >= threshold
    op_tpr = float(np.mean(pred[y_true == 1])) if np.any(y_true == 1) else 0.0
    op_fpr = float(np.mean(pred[y_true == 0])) if np.any(y_true == 0) else 0.0
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"ROC (AUC {roc_auc(y_true, prob):.4f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.scatter([op_fpr], [op_tpr], color="red", zorder=3, label=f"operating point t={threshold:.3f}")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    """Confusion matrix heat map with counts."""
    plt = _plt()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if m[i, j] > m.max() / 2 else "black",
            )
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
