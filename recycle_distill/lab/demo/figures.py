"""The demo's figures: ``loss.png`` (distillation and teacher curves) and ``transfer.png`` (CKA, cosine).

Both return None when matplotlib is missing (the report says so); nothing else needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

__all__ = ["plot_losses", "plot_transfer"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_losses(path: Path, result: Any, family: str) -> Optional[Path]:
    """Distillation: training loss per step, validation points; teacher pretraining loss if any."""
    plt = _pyplot()
    if plt is None:
        return None
    panels = 2 if result.pretraining is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.6), dpi=120, squeeze=False)
    axis = axes[0][0]
    axis.plot(range(1, len(result.losses) + 1), result.losses, color="#1f77b4", alpha=0.8, label="training (masked input)")
    if result.valid:
        steps, losses = zip(*result.valid)
        axis.plot(steps, losses, "o-", color="#d62728", label="validation (dev-clean, clean input)")
    if result.valid_masked:
        steps, losses = zip(*result.valid_masked)
        axis.plot(steps, losses, "s--", color="#2ca02c", label="training objective on dev-clean")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("distillation loss")
    axis.set_title(f"{family}: distillation")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    if result.pretraining is not None:
        pre = result.pretraining
        axis = axes[0][1]
        axis.plot(range(1, len(pre.losses) + 1), pre.losses, color="#9467bd", label="loss")
        axis.set_xlabel("teacher pretraining step")
        axis.set_ylabel("unit prediction loss")
        twin = axis.twinx()
        twin.plot(range(1, len(pre.accuracies) + 1), pre.accuracies, color="#ff7f0e", alpha=0.7, label="masked acc.")
        twin.plot(range(1, len(pre.unmasked_accuracies) + 1), pre.unmasked_accuracies, color="#8c564b", alpha=0.7,
                  label="unmasked acc.")
        twin.set_ylabel("unit accuracy")
        axis.set_title(f"teacher: masked prediction of {pre.clusters} MFCC units")
        axis.grid(alpha=0.3)
        handles = axis.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        axis.legend(handles, [h.get_label() for h in handles], fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_transfer(path: Path, result: Any) -> Optional[Path]:
    """Grouped bars per distilled layer: CKA (with the log-mel floor) and frame cosine."""
    plt = _pyplot()
    if plt is None or not result.transfer:
        return None
    random, distilled = result.transfer["random"], result.transfer["distilled"]
    layers = range(len(distilled.cka))
    labels = [f"h{i} vs T{layer}" for i, layer in enumerate(distilled.teacher_layers)]
    has_cosine = all(value is not None for value in distilled.cosine)
    figure, axes = plt.subplots(1, 2 if has_cosine else 1, figsize=(10 if has_cosine else 5.5, 3.6), dpi=120,
                                squeeze=False)
    width = 0.38
    axis = axes[0][0]
    axis.bar([i - width / 2 for i in layers], random.cka, width, color="#aaaaaa", label="random-init student")
    axis.bar([i + width / 2 for i in layers], distilled.cka, width, color="#1f77b4", label="distilled student")
    axis.plot(list(layers), distilled.fbank_cka, "k_", markersize=22, mew=2, label="log-mel input")
    axis.set_ylabel("linear CKA with the teacher layer")
    axis.set_ylim(0, 1.25)  # room for the legend above the bars
    axis.set_title("held-out utterances")
    if has_cosine:
        axis = axes[0][1]
        axis.bar([i - width / 2 for i in layers], random.cosine, width, color="#aaaaaa", label="random-init student")
        axis.bar([i + width / 2 for i in layers], distilled.cosine, width, color="#1f77b4", label="distilled student")
        axis.set_ylabel("mean frame cosine")
        axis.set_ylim(min(0.0, *random.cosine) - 0.05, 1.25)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_title("held-out utterances")
    for row in axes:
        for axis in row:
            axis.set_xticks(list(layers))
            axis.set_xticklabels(labels)
            axis.grid(alpha=0.3, axis="y")
            axis.legend(fontsize=7, loc="upper center", ncol=3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
