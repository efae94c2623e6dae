"""``recycle-distill demo``: the whole pipeline, offline, on a tiny corpus, in a few CPU minutes.

Stages (each prints what it does; a failure names its stage):

1. corpus  - a LibriSpeech-layout corpus spoken by espeak-ng voices (synthetic voices if
             espeak-ng is missing, announced loudly and recorded in the report);
2. teacher - a small random HuBERT written in fairseq's own checkpoint layout;
3. distil  - masking distillation (or the family's objective) of a tiny student, with a
             progress bar and TensorBoard logs, exported as a compact checkpoint;
4. load    - the export loaded back through torch.hub and through S3PRL's hub + Featurizer;
5. sid     - S3PRL's own SID downstream (voxceleb1) trained for a few steps on the corpus speakers;
6. report  - ``report.md`` and ``loss.png``: sizes, MACs, real-time factors, losses, accuracy.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

logger = logging.getLogger(__name__)

__all__ = ["DemoOptions", "run_demo", "DemoError"]

REPO_ROOT = Path(__file__).resolve().parents[2]

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


class DemoError(RuntimeError):
    """A demo stage failed; the message starts with the stage name."""


@dataclass
class DemoOptions:
    out: Path = Path("demo_out")
    steps: int = 60
    family: str = "armhubert"
    sid_steps: int = 60
    speakers: int = 6
    utterances_per_speaker: int = 8
    seed: int = 0
    echo: Callable[[str], None] = print


@dataclass
class DemoResult:
    corpus_source: str = ""
    corpus_seconds: float = 0.0
    teacher_path: str = ""
    export_path: str = ""
    losses: list = field(default_factory=list)
    valid_loss: Optional[float] = None
    train_seconds: float = 0.0
    profile: dict = field(default_factory=dict)
    sid: dict = field(default_factory=dict)
    loaded: dict = field(default_factory=dict)


def run_demo(options: DemoOptions) -> DemoResult:
    """Run every stage; raises :class:`DemoError` naming the stage that failed."""
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult()
    stages = [("corpus", _corpus), ("teacher", _teacher), ("distil", _distil), ("load", _load),
              ("sid", _sid), ("report", _report)]
    for number, (name, stage) in enumerate(stages, 1):
        options.echo(f"\n[{number}/{len(stages)}] {name}")
        started = time.perf_counter()
        try:
            stage(options, out, result)
        except Exception as err:  # every failure is reported with its stage
            raise DemoError(f"stage '{name}' failed: {type(err).__name__}: {err}") from err
        options.echo(f"    done in {time.perf_counter() - started:.1f} s")
    return result


# ---------------------------------------------------------------------------------- stages
def _corpus(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from ..data.synth import espeak_available, make_tiny_librispeech

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
                 f"({info.total_seconds:.0f} s of audio) from {info.corpus_source} in {root}")


def _teacher(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from ..teacher.random_teacher import save_random_hubert

    path = out / "teacher" / "tiny_hubert_fairseq.pt"
    save_random_hubert(path, seed=options.seed, **TEACHER_SHAPE)
    result.teacher_path = str(path)
    options.echo(f"    random HuBERT ({TEACHER_SHAPE['encoder_layers']} layers, {TEACHER_SHAPE['encoder_embed_dim']}-d) "
                 f"in fairseq's checkpoint layout: {path}")


def _distil(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from ..train import load_train_config
    from ..train.trainer import Trainer

    run_dir = out / "distil"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    distiller = {**STUDENT, **FAMILY_EXTRAS[options.family]}
    config = load_train_config({
        "family": options.family,
        "teacher": {"teacher_model": result.teacher_path, "mask_prob": 0.65},
        "train": {"output_dir": str(run_dir), "max_steps": options.steps, "batch_size": 4, "num_workers": 1,
                  "distil_random_layer": STUDENT_LAYERS - 1, "log_every_steps": 5, "seed": options.seed,
                  "val_every_steps": max(options.steps // 3, 1), "save_every_steps": max(options.steps // 3, 1),
                  "max_audio_seconds": 3.0, "delete_projections": options.family == "fithubert"},
        "optimizer": {"lr": 2.0e-3, "warmup_proportion": 0.1},
        "data": {"libri_root": str(out / "corpus" / "LibriSpeech"), "train_set": ["train-clean-100"],
                 "test_set": ["dev-clean"]},
        "distiller": distiller,
    })
    options.echo(f"    {options.family} student, objective {config.objective}, {options.steps} steps "
                 f"(TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'})")
    started = time.perf_counter()
    trainer = Trainer(config)
    summary = trainer.fit()
    result.train_seconds = time.perf_counter() - started
    result.export_path = summary["export"]
    result.valid_loss = summary["best_valid"]
    result.losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    options.echo(f"    loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}; exported {result.export_path}")


def _load(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from ..superb.launcher import register_upstreams

    waves = [torch.randn(24000) * 0.1, torch.randn(16000) * 0.1]
    if (REPO_ROOT / "hubconf.py").is_file():
        upstream = torch.hub.load(str(REPO_ROOT), options.family, source="local", ckpt=result.export_path)
        how = f"torch.hub.load({REPO_ROOT}, '{options.family}', source='local')"
    else:  # a non-editable install has no repository root; use the installed hubconf
        hubconf = importlib.import_module(f"recycle_distill.upstreams.{options.family}.hubconf")
        upstream = getattr(hubconf, options.family)(result.export_path)
        how = f"recycle_distill.upstreams.{options.family}.hubconf"
    with torch.no_grad():
        hidden = upstream(waves)["hidden_states"]
    options.echo(f"    {how}: {len(hidden)} hidden states of shape {tuple(hidden[0].shape)}")
    register_upstreams()
    import s3prl.hub
    from s3prl.upstream.interfaces import Featurizer

    via_s3prl = getattr(s3prl.hub, options.family)(ckpt=result.export_path)
    featurizer = Featurizer(via_s3prl, "hidden_states", upstream_device="cpu")
    with torch.no_grad():
        features = featurizer(waves, via_s3prl(waves))
    options.echo(f"    s3prl.hub.{options.family} + S3PRL Featurizer: features {[tuple(f.shape) for f in features]}")
    result.loaded = {"torch_hub": how, "s3prl_features": [list(f.shape) for f in features]}


def _sid(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from ..superb.logs import parse_log
    from .voxceleb import make_voxceleb1_layout

    vox = out / "voxceleb1"
    if vox.exists():
        shutil.rmtree(vox)
    counts = make_voxceleb1_layout(out / "corpus" / "LibriSpeech", vox)
    _clear_voxceleb1_cache()
    expdir = out / "sid"
    if expdir.exists():
        shutil.rmtree(expdir)
    steps = options.sid_steps
    overrides = ",,".join([
        f"config.runner.total_steps={steps}", f"config.runner.eval_step={steps}", f"config.runner.save_step={steps}",
        f"config.runner.log_step={max(steps // 4, 1)}", "config.runner.max_keep=1",
        "config.runner.eval_dataloaders=['dev','test']", "config.runner.gradient_accumulate_steps=1",
        # The SUPERB schedule warms up over 5000 steps; a demo of a few dozen steps needs none.
        "config.optimizer.lr=1.0e-2", "config.scheduler.num_warmup_steps=0",
        f"config.downstream_expert.datarc.file_path={vox}", f"config.downstream_expert.datarc.meta_data={vox / 'iden_split.txt'}",
        "config.downstream_expert.datarc.num_workers=0", "config.downstream_expert.datarc.train_batch_size=8",
        "config.downstream_expert.datarc.eval_batch_size=1", "config.downstream_expert.datarc.max_timestep=64000",
    ])
    command = [sys.executable, "-m", "recycle_distill.superb", "-m", "train", "-n", "demo_sid", "-p", str(expdir),
               "-u", options.family, "-d", "voxceleb1", "-k", result.export_path, "--device", "cpu", "-o", overrides]
    options.echo(f"    S3PRL voxceleb1 (SID) on {counts['speakers']} speakers "
                 f"({counts['train']} train / {counts['dev']} dev / {counts['test']} test), {steps} steps")
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    (out / "sid_stdout.log").write_text(completed.stdout + "\n" + completed.stderr)
    if completed.returncode != 0:
        raise RuntimeError(f"run_downstream exited {completed.returncode}; see {out / 'sid_stdout.log'}:\n"
                           + completed.stderr[-2000:])
    observations = []
    for log in [expdir / "log.log", out / "sid_stdout.log"]:
        if log.is_file():
            observations += parse_log(log)
    accuracy = {obs.split: obs.value for obs in observations if obs.metric == "acc"}
    if "test" not in accuracy:
        raise RuntimeError(f"no test accuracy found in the S3PRL logs ({expdir})")
    result.sid = {"accuracy": accuracy, "speakers": counts["speakers"], "steps": steps,
                  "chance": 1.0 / counts["speakers"], "expdir": str(expdir)}
    options.echo(f"    SID accuracy: dev {accuracy.get('dev', float('nan')):.3f}, test {accuracy['test']:.3f} "
                 f"(chance {1 / counts['speakers']:.3f})")


def _report(options: DemoOptions, out: Path, result: DemoResult) -> None:
    from .report import measure_models, write_report

    result.profile = measure_models(result.teacher_path, result.export_path, options.family)
    paths = write_report(out, options, result)
    for path in paths:
        options.echo(f"    wrote {path}")
    if not any(path.suffix == ".png" for path in paths):
        options.echo("    loss.png NOT written: matplotlib is not installed (pip install matplotlib)")


def _clear_voxceleb1_cache() -> None:
    """S3PRL caches voxceleb1 file lists inside its package, keyed by split only: stale across datasets."""
    spec = importlib.util.find_spec("s3prl")
    for location in (spec.submodule_search_locations or []) if spec else []:
        cache = Path(location) / "downstream" / "voxceleb1" / ".cache"
        if cache.is_dir():
            shutil.rmtree(cache)
