"""The demo's report: size and speed, the curves, representation transfer, the downstream comparison."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Optional

import torch

from recycle_distill.lab.machine import describe_machine
from recycle_distill.lab.profiling import count_flops, time_interleaved
from recycle_distill.util.sample_rate import SAMPLE_RATE
from recycle_distill.lab.demo.figures import plot_losses, plot_transfer
from recycle_distill.lab.demo.probe import paired_difference

__all__ = ["measure_models", "write_report", "downstream_rows"]

# (label, row minus this row) pairs the report tests against the fold-to-fold noise.
COMPARISONS = (("distilled student", "random-init student"), ("teacher", "distilled student"),
               ("distilled student", "fbank"), ("teacher", "fbank"))


def measure_models(teacher_path: str, student_path: str, family: str, seconds: float = 10.0) -> dict[str, Any]:
    """Parameters, MACs and real-time factor (10 s of audio, batch 1, this machine's threads)."""
    from recycle_distill.checkpoint import load_student
    from recycle_distill.training.teacher import load_teacher

    teacher = load_teacher(teacher_path)
    student = load_student(student_path, family)
    wave = torch.randn(1, int(SAMPLE_RATE * seconds)) * 0.1
    lengths = torch.tensor([wave.shape[1]])
    models = {"teacher": lambda: teacher(wave, lengths), "student": lambda: student(wave, lengths)}
    with torch.no_grad():
        times = time_interleaved(models, repeats=5, warmup=1)  # median of 5: robust to a busy neighbour
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
    report["dtype"] = str(next(student.parameters()).dtype).removeprefix("torch.")
    return report


def downstream_rows(result: Any) -> list[tuple[str, str, str]]:
    """(features, accuracy, per-fold accuracies) rows of the downstream table, chance first."""
    rows = [("chance", f"{result.downstream_settings['chance']:.3f}", "")]
    for name, scores in result.downstream.items():
        rows.append((name, f"{scores.mean:.3f} ± {scores.std:.3f}", " ".join(f"{a:.2f}" for a in scores.per_fold)))
    return rows


def _size_section(profile: dict, export_path: str) -> list[str]:
    teacher, student = profile["teacher"], profile["student"]
    return [
        "## Size and speed (this machine)",
        "",
        f"Measured on {profile['seconds']:.0f} s of audio, batch 1, {profile['threads']} threads, both models in "
        f"{profile['dtype']} as loaded (the student on its plain blocks); MACs counted with "
        "`torch.utils.flop_counter`. Real-time factors are medians of 5 interleaved runs; on a machine shared "
        "with other jobs they still move between runs, the MACs do not. Other precisions and the fast CPU "
        f"blocks: `recycle-distill profile {export_path} --dtype bf16` (or `int8`).",
        "",
        "| model | parameters | GMACs | real-time factor |",
        "|---|---|---|---|",
        f"| teacher | {teacher['params']:,} | {teacher['macs'] / 1e9:.2f} | {teacher['rtf']:.4f} |",
        f"| student | {student['params']:,} | {student['macs'] / 1e9:.2f} | {student['rtf']:.4f} |",
        f"| student / teacher | {student['params'] / teacher['params']:.3f} | {student['macs'] / teacher['macs']:.3f} "
        f"| {student['rtf'] / teacher['rtf']:.3f} |",
        "",
    ]


def _teacher_lines(options: Any, result: Any) -> list[str]:
    pre = result.pretraining
    if pre is None:
        return [f"- teacher: RANDOM-weight HuBERT-shaped model in fairseq's checkpoint layout (`{result.teacher_path}`)"]
    tail = max(1, len(pre.accuracies) // 5)
    masked = sum(pre.accuracies[-tail:]) / tail
    unmasked = sum(pre.unmasked_accuracies[-tail:]) / tail
    return [
        f"- teacher: HuBERT-shaped model in fairseq's checkpoint layout (`{result.teacher_path}`), pretrained for "
        f"{len(pre.losses)} steps ({pre.seconds:.0f} s) to predict {pre.clusters} MFCC k-means units of masked "
        f"frames from their context; unit accuracy over its last {tail} steps: masked frames {masked:.2f}, "
        f"unmasked {unmasked:.2f} (always guessing the most frequent unit: {pre.majority:.2f})",
    ]


def _transfer_section(result: Any) -> list[str]:
    random, distilled = result.transfer["random"], result.transfer["distilled"]
    lines = [
        "## Representation transfer (held-out utterances)",
        "",
        "Per distilled layer, the student's `hidden_states[i]` against the teacher layer it learns from, on the "
        "dev-clean utterances (voices and sentences never seen in training), all frames pooled. Linear CKA is "
        "1 for representations equal up to rotation and scale; the log-mel column is the CKA of the input "
        "spectrogram itself with that teacher layer: what any input-driven representation shares for free.",
        "",
        "| student hidden state | teacher layer | CKA random-init | CKA distilled | cosine random-init "
        "| cosine distilled | CKA log-mel input |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, layer in enumerate(distilled.teacher_layers):
        lines.append(
            f"| {index} | {layer} | {random.cka[index]:.3f} | **{distilled.cka[index]:.3f}** | "
            f"{_fmt(random.cosine[index])} | {_fmt(distilled.cosine[index])} | {distilled.fbank_cka[index]:.3f} |")
    better = all(d > r for d, r in zip(distilled.cka, random.cka))
    lines += ["", f"Distilled CKA above random-init CKA on every distilled layer: **{'yes' if better else 'NO'}**. "
              "Figure: `transfer.png`.", ""]
    return lines


def _fmt(value: Any) -> str:
    return "n/a (widths differ)" if value is None else f"{value:.3f}"


def _downstream_section(options: Any, result: Any) -> list[str]:
    settings = result.downstream_settings
    keywords = result.keywords
    lines = [
        "## Downstream: keyword spotting on voices the probe never heard",
        "",
        f"Task: which of 10 command words (Speech Commands' yes/no/up/down/left/right/on/off/stop/go) a clip says; "
        f"{settings['clips']} clips, every one of {keywords.num_voices} {keywords.source} voices saying every word "
        f"{options.keyword_takes} times at random pitch and speed. The probe is SUPERB's recipe in miniature, "
        "run in-process instead of S3PRL's runner to fit the time budget: softmax layer weights, mean pooling, "
        f"a linear classifier, {options.probe_steps} full-batch AdamW steps, identical for every row. "
        f"{settings['folds']} folds each hold out whole voices; two probe seeds per fold. Why this task: speaker "
        "identity is what separates espeak-ng voices most plainly (pitch, formant scaling), so speaker ID cannot "
        "tell features apart (in our check the same probe on fbank identified the 6 corpus speakers with 0.99 "
        "accuracy); which word was said, by a voice the probe never heard, needs content that survives a "
        "change of voice, what speech representations are for.",
        "",
        "| features | accuracy (mean ± sd over folds) | per fold |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {accuracy} | {folds} |" for name, accuracy, folds in downstream_rows(result)]
    lines += ["", "| difference | mean over folds | standard error | beyond fold-to-fold noise (> 2 s.e.) |",
              "|---|---|---|---|"]
    for first, second in COMPARISONS:
        mean, error = paired_difference(result.downstream[first], result.downstream[second])
        lines.append(f"| {first} − {second} | {mean:+.3f} | {error:.3f} | {'yes' if abs(mean) > 2 * error else 'no'} |")
    gap, error = paired_difference(result.downstream["teacher"], result.downstream["distilled student"])
    if gap < -2 * error:
        lines += ["", "Here the distilled student scores above its own teacher, beyond the noise. Read it as a "
                  "property of this toy setting, not of distillation: one plausible cause is that a student with "
                  "96-wide layers, trained to regress the teacher, keeps the teacher's dominant directions and "
                  "drops finer, voice-specific detail that a linear probe trained on nine voices overfits to; the "
                  "demo does not establish the cause. With real teachers and tasks, students trail their teachers."]
    seed_gap = max(abs(row[0] - row[-1]) for scores in result.downstream.values() for row in scores.accuracies)
    lines += ["", f"Run-to-run noise: the two probe seeds differ by at most {seed_gap:.3f} on any fold; the "
              "fold-to-fold spread (which voices are held out) is larger and is what the standard errors "
              "above measure. Distillation itself ran once (one seed): its own run-to-run spread is not "
              "included.", ""]
    return lines


def write_report(out: Path, options: Any, result: Any) -> list[Path]:
    """``report.md``, ``loss.png`` and ``transfer.png`` in ``out`` (figures only with matplotlib)."""
    valid = result.valid
    lines = [
        "# recycle-distill demo report",
        "",
        f"- corpus: **{result.corpus_source}** speech, LibriSpeech layout, {result.corpus_seconds:.0f} s of audio"
        + (" (espeak-ng voices as speakers)" if result.corpus_source == "espeak-ng"
           else " — SYNTHETIC voices: espeak-ng was not installed"),
        *_teacher_lines(options, result),
        f"- student: {options.family}, distilled for {len(result.losses)} steps in {result.train_seconds:.0f} s, "
        f"exported to `{result.export_path}`; its random initialisation is kept as `{result.init_path}`",
        f"- this run: {sum(result.stage_seconds.values()) / 60:.1f} min before this report (stage times at the end) "
        f"on {describe_machine(result.machine)} at the start",
        "",
        *_size_section(result.profile, result.export_path),
        "## Distillation",
        "",
        f"- training loss: {result.losses[0]:.4f} (step 1) -> {result.losses[-1]:.4f} (step {len(result.losses)})",
        "- validation loss (dev-clean, clean input): " + ", ".join(f"{loss:.3f} (step {step})" for step, loss in valid),
        "- curves: `loss.png`; TensorBoard logs: `distil/tensorboard`",
        "",
        *_validation_note(options, result),
        *_transfer_section(result),
        *_downstream_section(options, result),
        *_teacher_note(result),
        *_loading_section(result.loaded),        "## Stage times",
        "",
        "| " + " | ".join(result.stage_seconds) + " |",
        "|" + "---|" * len(result.stage_seconds),
        "| " + " | ".join(f"{seconds:.0f} s" for seconds in result.stage_seconds.values()) + " |",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    written = [report]
    for path in (plot_losses(out / "loss.png", result, options.family), plot_transfer(out / "transfer.png", result)):
        if path is not None:
            written.append(path)
    return written


def _loading_section(loaded: dict) -> list[str]:
    """The lines that loaded the export, as they ran (each names the export with ``ckpt=``)."""
    return [
        "## Loading the export",
        "",
        "Through the torch.hub entry, as the demo loaded it:",
        "",
        "```python", loaded["torch_hub"], "```",
        "",
        f"Through S3PRL's hub (its Featurizer gave features of shape {loaded['s3prl_features']}):",
        "",
        "```python", loaded["s3prl"], "```",
        "",
    ]


def _rose(history: list) -> Optional[tuple]:
    """(best (step, loss), last (step, loss)) when the last value is over 5 % above the best, else None."""
    best, last = min(history, key=lambda item: item[1]), history[-1]
    return (best, last) if last[1] > best[1] * 1.05 else None


def _validation_note(options: Any, result: Any) -> list[str]:
    """Why the clean-input validation loss can rise while training falls, and what this run shows."""
    if not result.valid_masked:
        return []
    lines = [
        "Why the validation loss can rise while the training loss falls (the first 60-step demo went 0.74 -> "
        "1.18): they measure different things. Masking distillation trains the student on input with about two "
        "thirds of its frames replaced by its mask embedding (masked frames chase the teacher on clean input, "
        "the others the teacher on masked input); the validation loss runs the student on clean input against "
        "the clean teacher, an input it never trains on, so it can drift while the masked task improves, most "
        "of all with a random teacher, whose output on masked input has little to do with its output on clean "
        "input. To tell that drift from overfitting the demo also measures the training objective itself on "
        "dev-clean (fixed masks): " + ", ".join(f"{loss:.3f} (step {step})" for step, loss in result.valid_masked)
        + ". (In the 60-step random-teacher run the clean-input loss was as high on the training utterances as "
        "on dev-clean, and this masked measure kept falling: pure drift.)",
    ]
    epochs = len(result.losses) * 4 / max(1, options.speakers * options.utterances_per_speaker)
    clean, masked = _rose(result.valid), _rose(result.valid_masked)
    if masked:
        (step, loss), (last_step, last) = masked
        lines.append(f"Here the training objective on dev-clean rose from {loss:.3f} (step {step}) to {last:.3f} "
                     f"(step {last_step}) while the training loss kept falling: with every training utterance seen "
                     f"about {epochs:.0f} times the student starts to fit them, mild overfitting; the validation "
                     "loss above shows it too.")
    elif clean:
        (step, loss), (last_step, last) = clean
        lines.append(f"Here the validation loss rose from {loss:.3f} (step {step}) to {last:.3f} (step {last_step}) "
                     "while the training objective on dev-clean did not: drift, not overfitting.")
    else:
        lines.append("Here neither rose by more than 5 % from its best.")
    return [" ".join(lines), "", "The transfer and downstream sections below measure the student on clean input, "
            "as users run it.", ""]


def _teacher_note(result: Any) -> list[str]:
    if result.pretraining is None:
        return ["## What a random teacher can and cannot show", "",
                "With a random teacher the transfer table still shows the student learning to reproduce the "
                "teacher's layers: the mechanism works. But those layers are random functions of the input, so "
                "whatever the downstream rows reach comes from the input the teacher passes through, not from "
                "anything it learnt: they can show what distillation preserves, not knowledge being carried "
                "over. Run with `--teacher-steps` > 0 for a teacher that has learnt something.", ""]
    return ["## What the teacher knows", "",
            "The teacher's brief pretraining gives it speech knowledge of a modest kind: which MFCC unit a "
            "frame is, partly inferred from context (see its unit accuracy above). Without it (a random "
            "teacher) the transfer table still shows the student reproducing the teacher's layers, but there "
            "is nothing worth carrying over; with it the downstream table shows how much of what the teacher "
            "learnt survives in its layers and in the student at about a quarter of its cost. A real teacher "
            "(HuBERT Base, 960 h) is far stronger: the numbers here show the mechanism, not its size.", ""]
