"""The demo's report: sizes, MACs and speed of student vs teacher, losses, SID accuracy, corpus."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from ..profiling import count_flops, time_interleaved

__all__ = ["measure_models", "write_report"]


def measure_models(teacher_path: str, student_path: str, family: str, seconds: float = 10.0) -> dict[str, Any]:
    """Parameters, MACs and real-time factor (10 s of audio, batch 1, this machine's threads)."""
    from ..checkpoint import load_student
    from ..teacher import load_teacher

    teacher = load_teacher(teacher_path)
    student = load_student(student_path, family)
    wave = torch.randn(1, int(16000 * seconds)) * 0.1
    lengths = torch.tensor([wave.shape[1]])
    models = {"teacher": lambda: teacher(wave, lengths), "student": lambda: student(wave, lengths)}
    with torch.no_grad():
        times = time_interleaved(models, repeats=3, warmup=1)
    report = {}
    for name, run in models.items():
        module = teacher if name == "teacher" else student
        report[name] = {
            "params": sum(p.numel() for p in module.parameters()),
            "macs": count_flops(run) // 2,
            "rtf": statistics.median(times[name]) / seconds,
        }
    report["seconds"] = seconds
    report["threads"] = torch.get_num_threads()
    return report


def write_report(out: Path, options: Any, result: Any) -> list[Path]:
    """``report.md`` and ``loss.png`` in ``out``."""
    profile = result.profile
    teacher, student = profile["teacher"], profile["student"]
    sid = result.sid
    lines = [
        "# recycle-distill demo report",
        "",
        f"- corpus: **{result.corpus_source}** speech, LibriSpeech layout, {result.corpus_seconds:.0f} s of audio"
        + (" (espeak-ng voices as speakers)" if result.corpus_source == "espeak-ng"
           else " — SYNTHETIC voices: espeak-ng was not installed"),
        f"- teacher: random-weight HuBERT-shaped model saved in fairseq's checkpoint layout (`{result.teacher_path}`)",
        f"- student: {options.family}, distilled for {len(result.losses)} steps in {result.train_seconds:.0f} s, "
        f"exported to `{result.export_path}`",
        "",
        "## Size and speed (this machine)",
        "",
        f"Measured on {profile['seconds']:.0f} s of audio, batch 1, {profile['threads']} threads, fp32; "
        "MACs counted with `torch.utils.flop_counter`.",
        "",
        "| model | parameters | GMACs | real-time factor |",
        "|---|---|---|---|",
        f"| teacher | {teacher['params']:,} | {teacher['macs'] / 1e9:.2f} | {teacher['rtf']:.4f} |",
        f"| student | {student['params']:,} | {student['macs'] / 1e9:.2f} | {student['rtf']:.4f} |",
        f"| student / teacher | {student['params'] / teacher['params']:.3f} | {student['macs'] / teacher['macs']:.3f} "
        f"| {student['rtf'] / teacher['rtf']:.3f} |",
        "",
        "## Distillation",
        "",
        f"- training loss: {result.losses[0]:.4f} (step 1) -> {result.losses[-1]:.4f} (step {len(result.losses)}); "
        f"best validation loss {result.valid_loss:.4f}" if result.valid_loss is not None else
        f"- training loss: {result.losses[0]:.4f} -> {result.losses[-1]:.4f}",
        "- curve: `loss.png`; TensorBoard logs: `distil/tensorboard`",
        "",
        "## Loading the export",
        "",
        f"- {result.loaded.get('torch_hub', '')}",
        f"- S3PRL hub entry + Featurizer: features of shape {result.loaded.get('s3prl_features')}",
        "",
        "## S3PRL SID downstream (voxceleb1 recipe on the corpus speakers)",
        "",
        f"- {sid['speakers']} speakers, {sid['steps']} training steps, frozen upstream",
        f"- accuracy: dev {sid['accuracy'].get('dev', float('nan')):.3f}, test {sid['accuracy']['test']:.3f} "
        f"(chance {sid['chance']:.3f})",
        f"- experiment folder: `{sid['expdir']}`",
        "",
        "These numbers come from a tiny random teacher and a few steps: they show the pipeline works end to "
        "end, not the quality of a distilled model.",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    written = [report]
    plot = _plot_losses(out / "loss.png", result.losses, options.family)
    if plot is not None:
        written.append(plot)
    return written


def _plot_losses(path: Path, losses: list[float], family: str):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    axis.plot(range(1, len(losses) + 1), losses, color="#1f77b4")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("distillation loss")
    axis.set_title(f"{family}: training loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
