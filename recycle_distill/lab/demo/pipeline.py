"""``recycle-distill demo``: what distillation achieves, offline, on a tiny corpus, on CPU.

Stages (each prints what it does; a failure names its stage):

1. corpus     - a LibriSpeech-layout corpus spoken by espeak-ng voices, and a keyword set (ten
                command words said by every voice); synthetic voices if espeak-ng is missing,
                announced loudly and recorded in the report;
2. teacher    - a small HuBERT in fairseq's own checkpoint layout, given real knowledge by a brief
                HuBERT-style masked prediction of MFCC k-means units (``teacher_steps=0``: random);
3. distil     - masking distillation (or the family's objective) of a tiny student, with a
                progress bar, TensorBoard logs and validation, exported as a compact checkpoint
                (the randomly initialised student is exported too, for the comparisons);
4. load       - the export loaded back through torch.hub and through S3PRL's hub + Featurizer;
5. transfer   - per distilled layer, linear CKA and frame cosine of student vs teacher on
                held-out utterances, randomly initialised vs distilled student;
6. downstream - one keyword-spotting probe (layer weights, mean pooling, linear) on frozen
                fbank, random student, distilled student and teacher features, voices held out;
7. report     - ``report.md``, ``loss.png`` and ``transfer.png``.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from recycle_distill import families
from recycle_distill.lab.machine import machine
from recycle_distill.util.sample_rate import SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = ["DemoOptions", "DemoResult", "run_demo", "DemoError"]

REPO_ROOT = Path(__file__).resolve().parents[3]

# A teacher small enough for two CPU cores, shaped like HuBERT (CNN, 6 post-LN layers).
TEACHER_SHAPE = dict(encoder_layers=6, encoder_embed_dim=192, encoder_ffn_embed_dim=768, encoder_attention_heads=4,
                     conv_feature_layers="[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2", final_dim=64)
STUDENT_LAYERS = 4
STUDENT = {
    "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(96, 2, 2)] * 2",
    "encoder_layers": STUDENT_LAYERS, "encoder_embed_dim": 96, "encoder_ffn_embed_dim": 192,
    "encoder_attention_heads": 4, "conv_pos_groups": 4, "pred_head_final_dim": 192,
}
FAMILY_EXTRAS = {
    "armhubert": {"reuse_pattern": "[True, False] * 2", "layer_grad_scale": True},
    "maskhubert": {},
    "starhubert": {},
    "fithubert": {"enable_tr_layer": True, "tr_reduce_factor": 2, "tr_conv1d_kernel": 2, "pred_layer_id": "[0, 1, 2, 3]"},
}
UNITS = 50  # k-means units the teacher learns to predict


class DemoError(RuntimeError):
    """A demo stage failed; the message starts with the stage name."""


@dataclass
class DemoOptions:
    out: Path = Path("demo_out")
    steps: int = 200
    family: str = "armhubert"
    teacher_steps: int = 250
    probe_steps: int = 200
    speakers: int = 6
    utterances_per_speaker: int = 12
    keyword_voices: int = 12
    keyword_takes: int = 2
    probe_seeds: tuple = (0, 1)
    seed: int = 0
    echo: Callable[[str], None] = print


@dataclass
class DemoResult:
    corpus_source: str = ""
    corpus_seconds: float = 0.0
    keywords: Any = None
    teacher_path: str = ""
    pretraining: Any = None
    init_path: str = ""
    export_path: str = ""
    layer_mapping: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    valid: list = field(default_factory=list)  # (step, the trainer's validation loss)
    valid_masked: list = field(default_factory=list)  # (step, the training objective on the validation set)
    train_seconds: float = 0.0
    profile: dict = field(default_factory=dict)
    transfer: dict = field(default_factory=dict)
    downstream: dict = field(default_factory=dict)
    downstream_settings: dict = field(default_factory=dict)
    loaded: dict = field(default_factory=dict)  # the Python lines that loaded the export, and what came back
    stage_seconds: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)  # lab.machine.machine() when the demo started


def run_demo(options: DemoOptions) -> DemoResult:
    """Run every stage; raises :class:`DemoError` naming the stage that failed."""
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(machine=machine())
    stages = [("corpus", _corpus), ("teacher", _teacher), ("distil", _distil), ("load", _load),
              ("transfer", _transfer), ("downstream", _downstream), ("report", _report)]
    for number, (name, stage) in enumerate(stages, 1):
        options.echo(f"\n[{number}/{len(stages)}] {name}")
        started = time.perf_counter()
        try:
            stage(options, out, result)
        except Exception as err:  # every failure is reported with its stage
            raise DemoError(f"stage '{name}' failed: {type(err).__name__}: {err}") from err
        result.stage_seconds[name] = time.perf_counter() - started
        options.echo(f"    done in {result.stage_seconds[name]:.1f} s")
    return result


def _corpus_waves(out: Path, subset: str) -> list[Path]:
    return sorted((out / "corpus" / "LibriSpeech" / subset).rglob("*.flac"))


# ---------------------------------------------------------------------------------- stages
def _corpus(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from recycle_distill.training.data.synth import espeak_available, make_tiny_librispeech
    from recycle_distill.lab.demo.keywords import KEYWORDS, make_keyword_set

    root = out / "corpus" / "LibriSpeech"
    if root.exists():
        shutil.rmtree(root)
    if not espeak_available():
        options.echo("    " + "!" * 70)
        options.echo("    ! espeak-ng is NOT installed: using SYNTHETIC harmonic voices instead of speech.")
        options.echo("    ! Install it (apt-get install espeak-ng) for real speech; the report says which was used.")
        options.echo("    " + "!" * 70)
    info = make_tiny_librispeech(root, speakers=options.speakers, utterances_per_speaker=options.utterances_per_speaker,
                                 seed=options.seed, subsets=("train-clean-100", "dev-clean"))
    result.corpus_source = info.corpus_source
    result.corpus_seconds = info.total_seconds
    options.echo(f"    {options.speakers} speakers x {options.utterances_per_speaker} utterances per subset "
                 f"({info.total_seconds:.0f} s of audio) from {info.corpus_source} in {root}; dev-clean has other voices")
    result.keywords = make_keyword_set(options.keyword_voices, options.keyword_takes, seed=options.seed,
                                       use_espeak=info.corpus_source == "espeak-ng")
    options.echo(f"    keyword set: {len(KEYWORDS)} words x {options.keyword_voices} voices x {options.keyword_takes} "
                 f"takes = {len(result.keywords.waves)} clips ({result.keywords.source})")


def _teacher(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from recycle_distill.training.teacher.random_teacher import save_random_hubert
    from recycle_distill.lab.demo.pretrain import pretrain_teacher

    path = out / "teacher" / "tiny_hubert_fairseq.pt"
    save_random_hubert(path, seed=options.seed, **TEACHER_SHAPE)
    result.teacher_path = str(path)
    options.echo(f"    HuBERT ({TEACHER_SHAPE['encoder_layers']} layers, {TEACHER_SHAPE['encoder_embed_dim']}-d) "
                 f"in fairseq's checkpoint layout: {path}")
    if options.teacher_steps <= 0:
        options.echo("    teacher_steps=0: the teacher keeps its RANDOM weights")
        return
    options.echo(f"    pretraining it for {options.teacher_steps} steps: masked prediction of MFCC k-means units "
                 f"on train-clean-100")
    waves = [str(path) for path in _corpus_waves(out, "train-clean-100")]
    result.pretraining = pretrain_teacher(str(path), waves, options.teacher_steps, clusters=UNITS, seed=options.seed,
                                          echo=options.echo)
    pre = result.pretraining
    tail = max(1, len(pre.accuracies) // 5)
    options.echo(f"    unit accuracy (last {tail} steps): masked frames {_mean(pre.accuracies[-tail:]):.2f}, "
                 f"unmasked {_mean(pre.unmasked_accuracies[-tail:]):.2f} (majority unit {pre.majority:.2f})")


def _distil(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from recycle_distill.training import load_train_config
    from recycle_distill.training.state import export_student
    from recycle_distill.training.trainer import Trainer
    from recycle_distill.lab.demo.probe import single_thread

    run_dir = out / "distil"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    distiller = {**STUDENT, **FAMILY_EXTRAS[options.family]}
    every = max(options.steps // 5, 1)  # each validation costs about 20 training steps
    config = load_train_config({
        "family": options.family,
        "teacher": {"teacher_model": result.teacher_path, "mask_prob": 0.65},
        "train": {"output_dir": str(run_dir), "max_steps": options.steps, "batch_size": 4, "num_workers": 1,
                  "distil_random_layer": STUDENT_LAYERS - 1, "log_every_steps": 5, "seed": options.seed,
                  "val_every_steps": every, "save_every_steps": max(options.steps // 2, 1), "keep_last": 1,
                  "max_audio_seconds": 3.0, "delete_projections": families.family(options.family).time_reduction},
        "optimizer": {"lr": 2.0e-3, "warmup_proportion": 0.1},
        "data": {"libri_root": str(out / "corpus" / "LibriSpeech"), "train_set": ["train-clean-100"],
                 "test_set": ["dev-clean"]},
        "distiller": distiller,
    })
    options.echo(f"    {options.family} student, objective {config.objective}, {options.steps} steps, validation on "
                 f"dev-clean every {every} (TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'})")
    started = time.perf_counter()
    trainer = Trainer(config)
    result.layer_mapping = list(trainer.objective.layer_mapping)
    result.init_path = export_student(str(run_dir / "student_init.safetensors"), trainer.student, options.family,
                                      config.train.delete_projections)
    _record_validation(trainer, result.valid, result.valid_masked if config.objective == "masking" else None)
    # Batches of four short clips: one intra-op thread (the loader's worker has the other core)
    # ran 200 steps several times faster than two on a shared 2-core machine.
    with single_thread():
        trainer.validate()  # step 0: where the randomly initialised student starts
        summary = trainer.fit()
    result.train_seconds = time.perf_counter() - started
    result.export_path = summary["export"]
    result.losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    options.echo(f"    training loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}; validation loss "
                 f"{result.valid[0][1]:.4f} -> {result.valid[-1][1]:.4f}; exported {result.export_path}")


def _record_validation(trainer: Any, history: list, masked_history: Optional[list]) -> None:
    """Keep (step, loss) of every validation the trainer runs (it logs them but returns none).

    With ``masked_history`` the training objective itself (masked input, same per-utterance
    masks every time) is also measured on the validation set: it tells a student that stops
    generalising from one whose clean-input behaviour drifts while it learns the masked task.
    """
    validate = trainer.validate

    def validate_and_record() -> Optional[float]:
        loss = validate()
        if loss is None:
            return loss
        history.append((trainer.step, float(loss)))
        if masked_history is not None:
            masked_history.append((trainer.step, _masked_validation(trainer)))
        return loss

    trainer.validate = validate_and_record


@torch.no_grad()
def _masked_validation(trainer: Any) -> float:
    epoch = getattr(trainer.objective, "epoch", 0)
    trainer.objective.set_epoch(0)  # the epoch seeds the masks: keep them fixed across validations
    trainer.student.eval()
    total, count = 0.0, 0
    for batch in trainer.valid_loader:
        if batch.is_empty:
            continue
        result = trainer.objective.training_loss(trainer.student, trainer.teacher, batch.to(trainer.device))
        total += float(result.total) * len(batch)
        count += len(batch)
    trainer.student.train()
    trainer.objective.set_epoch(epoch)
    return total / max(count, 1)


def hub_code(repo: Optional[Path], family: str, ckpt: str) -> str:
    """The Python lines the load stage runs to load ``ckpt`` (absolute) through the ``family``
    hub entry: ``torch.hub.load`` from the repository ``repo``, or the installed hubconf when
    there is none. The report prints them; ``ckpt=`` keeps them from fetching a release."""
    if repo is not None:
        return f"import torch\nupstream = torch.hub.load({str(repo)!r}, {family!r}, source='local', ckpt={ckpt!r})"
    return f"from recycle_distill.upstreams.{family}.hubconf import {family}\nupstream = {family}(ckpt={ckpt!r})"


def s3prl_code(family: str, ckpt: str) -> str:
    """The Python lines that load ``ckpt`` through S3PRL's hub, as the load stage does."""
    return ("from recycle_distill.s3prl.superb import register_upstreams\nregister_upstreams()\n"
            f"import s3prl.hub\nupstream = s3prl.hub.{family}(ckpt={ckpt!r})")


def _load(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from recycle_distill.s3prl.superb import register_upstreams

    waves = [torch.randn(SAMPLE_RATE * 3 // 2) * 0.1, torch.randn(SAMPLE_RATE) * 0.1]
    ckpt = str(Path(result.export_path).resolve())
    repo = REPO_ROOT if (REPO_ROOT / "hubconf.py").is_file() else None
    if repo is not None:
        upstream = torch.hub.load(str(repo), options.family, source="local", ckpt=ckpt)
    else:  # a non-editable install has no repository root; use the installed hubconf
        hubconf = importlib.import_module(f"recycle_distill.upstreams.{options.family}.hubconf")
        upstream = getattr(hubconf, options.family)(ckpt=ckpt)
    with torch.no_grad():
        hidden = upstream(waves)["hidden_states"]
    options.echo(f"    torch.hub entry '{options.family}': {len(hidden)} hidden states of shape {tuple(hidden[0].shape)}")
    register_upstreams()
    import s3prl.hub
    from s3prl.upstream.interfaces import Featurizer

    via_s3prl = getattr(s3prl.hub, options.family)(ckpt=ckpt)
    featurizer = Featurizer(via_s3prl, "hidden_states", upstream_device="cpu")
    with torch.no_grad():
        features = featurizer(waves, via_s3prl(waves))
    options.echo(f"    s3prl.hub.{options.family} + S3PRL Featurizer: features {[tuple(f.shape) for f in features]}")
    result.loaded = {"torch_hub": hub_code(repo, options.family, ckpt), "s3prl": s3prl_code(options.family, ckpt),
                     "s3prl_features": [list(f.shape) for f in features]}


def _transfer(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from recycle_distill.checkpoint import load_student
    from recycle_distill.training.teacher import load_teacher
    from recycle_distill.lab.demo.pretrain import load_waves
    from recycle_distill.lab.demo.probe import single_thread
    from recycle_distill.lab.demo.transfer import frame_matrices, measure_transfer, teacher_outputs

    paths = _corpus_waves(out, "dev-clean")
    waves = load_waves(paths)
    with single_thread():
        targets = teacher_outputs(load_teacher(result.teacher_path), waves)
    options.echo(f"    {len(waves)} held-out dev-clean utterances ({sum(w.numel() for w in waves) / SAMPLE_RATE:.0f} s, "
                 f"voices unseen in training); student hidden state i vs teacher layer {result.layer_mapping}")
    for name, path in (("random", result.init_path), ("distilled", result.export_path)):
        student = load_student(path, options.family)
        mapping = _hidden_state_mapping(student, result.layer_mapping)
        with single_thread():
            frames = frame_matrices(targets, student, waves, mapping)
        scores = result.transfer[name] = measure_transfer(frames, mapping)
        options.echo(f"    {name:>9} student: CKA " + " ".join(f"{value:.3f}" for value in scores.cka))
    options.echo("    log-mel input:     CKA " + " ".join(f"{value:.3f}" for value in result.transfer["distilled"].fbank_cka))


def _hidden_state_mapping(student: Any, layer_mapping: list) -> list:
    """Teacher layer of each exported hidden state (FitHuBERT without heads keeps the last ones)."""
    with torch.no_grad():
        count = len(student(torch.zeros(1, SAMPLE_RATE)).hidden_states)
    return layer_mapping[-count:]


def _downstream(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from recycle_distill.checkpoint import load_student
    from recycle_distill.training.teacher import load_teacher
    from recycle_distill.lab.demo.keywords import KEYWORDS
    from recycle_distill.lab.demo.probe import fbank_layers, pool_features, probe_accuracies, single_thread

    keywords = result.keywords
    teacher = load_teacher(result.teacher_path)
    upstreams = {
        "fbank": fbank_layers,
        "random-init student": _hidden_states(load_student(result.init_path, options.family)),
        "distilled student": _hidden_states(load_student(result.export_path, options.family)),
        "teacher": lambda wave: [layer[0] for layer in teacher(wave.unsqueeze(0)).layer_results],
    }
    folds = min(4, keywords.num_voices)
    options.echo(f"    keyword spotting, {len(KEYWORDS)} words, {len(keywords.waves)} clips; probe: layer weights + "
                 f"mean pooling + linear, {options.probe_steps} full-batch steps; {folds} folds holding out "
                 f"{keywords.num_voices // folds} voices each, seeds {list(options.probe_seeds)}")
    with single_thread():
        for name, extract in upstreams.items():
            features = pool_features(extract, keywords.waves)
            scores = probe_accuracies(features, keywords.labels, keywords.voices, folds=folds,
                                      seeds=options.probe_seeds, steps=options.probe_steps)
            result.downstream[name] = scores
            options.echo(f"    {name:>20}: accuracy {scores.mean:.3f} +- {scores.std:.3f} over folds")
    result.downstream_settings = {"folds": folds, "chance": 1.0 / len(KEYWORDS), "clips": len(keywords.waves)}


def _hidden_states(student: Any) -> Callable[[torch.Tensor], list]:
    return lambda wave: [state[0] for state in student(wave.unsqueeze(0)).hidden_states]


def _report(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from recycle_distill.lab.demo.report import measure_models, write_report

    result.profile = measure_models(result.teacher_path, result.export_path, options.family)
    paths = write_report(out, options, result)
    for path in paths:
        options.echo(f"    wrote {path}")
    if not any(path.suffix == ".png" for path in paths):
        options.echo("    loss.png and transfer.png NOT written: matplotlib is not installed (pip install matplotlib)")


def _mean(values: list) -> float:
    return sum(values) / max(len(values), 1)
