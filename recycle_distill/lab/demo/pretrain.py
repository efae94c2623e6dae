"""Give the demo's tiny teacher real knowledge: a brief HuBERT-style masked-prediction pretraining.

HuBERT's first iteration, in miniature: 39-d MFCCs (13 + deltas + delta-deltas, per-utterance
mean/variance normalised) on the teacher's 20 ms frame grid are clustered with k-means; the
model then learns to predict the cluster of masked frames from their unmasked context, through
S3PRL's own ``HubertModel.forward`` (its span masking, ``final_proj``, cosine logits over
``label_embs_concat`` and feature penalty). The trained weights go back into the same
fairseq-layout checkpoint, so the teacher loader reads it exactly as before.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor
from tqdm.auto import tqdm

from recycle_distill.lab.analysis.kmeans import assign_clusters, kmeans
from recycle_distill.util.sample_rate import SAMPLE_RATE
from recycle_distill.lab.demo.probe import single_thread

logger = logging.getLogger(__name__)

__all__ = ["PretrainResult", "load_waves", "mfcc_frames", "pretrain_teacher"]

FRAME_SAMPLES, HOP_SAMPLES = 400, 320  # the teacher CNN's receptive field and stride (16 kHz)


@dataclass
class PretrainResult:
    """What :func:`pretrain_teacher` did: per-step loss and masked-frame accuracy."""

    clusters: int
    frames: int
    majority: float  # share of frames in the most frequent unit: the accuracy of always guessing it
    losses: list = field(default_factory=list)
    accuracies: list = field(default_factory=list)
    unmasked_accuracies: list = field(default_factory=list)
    seconds: float = 0.0


def mfcc_frames(wave: Tensor) -> Tensor:
    """(S,) 16 kHz wave -> (T, 39) normalised MFCC + deltas, one row per teacher frame.

    25 ms windows every 20 ms without edge padding: T = (S - 400) // 320 + 1, the teacher's own
    frame count, so label t belongs to teacher frame t.
    """
    mfcc = torchaudio.compliance.kaldi.mfcc(wave.unsqueeze(0) * 32768, sample_frequency=SAMPLE_RATE, frame_length=25.0,
                                            frame_shift=20.0, num_ceps=13, snip_edges=True, dither=0.0)
    deltas = torchaudio.functional.compute_deltas(mfcc.T)
    features = torch.cat([mfcc.T, deltas, torchaudio.functional.compute_deltas(deltas)]).T
    return (features - features.mean(0)) / features.std(0).clamp_min(1e-5)


def load_waves(paths: Sequence[str | os.PathLike]) -> list[Tensor]:
    """The (S,) float32 samples of each audio file, which must be at :data:`SAMPLE_RATE`."""
    waves = []
    for path in paths:
        samples, rate = soundfile.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
        waves.append(torch.from_numpy(samples))
    return waves


def _batch(waves: list[Tensor], labels: list[Tensor], size: int, crop: int,
           generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random crops on the 320-sample grid: (B, S) waves, (B, S) padding, (B, T) labels."""
    picks = torch.randint(len(waves), (size,), generator=generator).tolist()
    pieces, targets = [], []
    for index in picks:
        wave, label = waves[index], labels[index]
        frames = min(label.shape[0], (crop - FRAME_SAMPLES) // HOP_SAMPLES + 1)
        start = int(torch.randint(label.shape[0] - frames + 1, (1,), generator=generator))
        samples = (frames - 1) * HOP_SAMPLES + FRAME_SAMPLES
        pieces.append(wave[start * HOP_SAMPLES: start * HOP_SAMPLES + samples])
        targets.append(label[start: start + frames])
    longest = max(piece.shape[0] for piece in pieces)
    source = torch.zeros(size, longest)
    padding = torch.ones(size, longest, dtype=torch.bool)
    target = torch.zeros(size, max(t.shape[0] for t in targets), dtype=torch.long)
    for row, (piece, label) in enumerate(zip(pieces, targets)):
        source[row, : piece.shape[0]] = piece
        padding[row, : piece.shape[0]] = False
        target[row, : label.shape[0]] = label
    return source, padding, target


def _build_model(checkpoint: dict):
    """S3PRL's HubertModel from a fairseq-layout checkpoint dict (weights loaded)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    cfg = checkpoint["cfg"]
    model_cfg = {k: v for k, v in cfg["model"].items() if k in HubertConfig.__dataclass_fields__}
    task_cfg = {k: v for k, v in cfg["task"].items() if k in HubertPretrainingConfig.__dataclass_fields__}
    symbols = checkpoint["task_state"]["dictionary_symbols"]
    model = HubertModel(HubertConfig(**model_cfg), HubertPretrainingConfig(**task_cfg), symbols)
    model.load_state_dict(checkpoint["model"])
    return model


def pretrain_teacher(
    path: str,
    wave_paths: Sequence[str],
    steps: int,
    *,
    clusters: int = 50,
    batch_size: int = 8,
    crop_seconds: float = 2.0,
    lr: float = 1.0e-3,
    head_lr: float = 2.0e-2,
    mask_prob: float = 0.5,
    unmasked_weight: float = 0.5,
    cnn_grad_scale: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    echo: Optional[Callable[[str], None]] = None,
) -> PretrainResult:
    """Pretrain the fairseq-layout HuBERT at ``path`` in place on ``wave_paths``.

    Args:
        path: a checkpoint written by :func:`recycle_distill.training.teacher.random_teacher.save_random_hubert`.
        wave_paths: 16 kHz training utterances.
        steps: optimizer steps (AdamW, 10 % linear warm-up, then linear decay).
        clusters: k-means K (HuBERT's first iteration uses 100 on 960 h).
        lr, head_lr: AdamW peak rates of the model and of the (discarded) unit classifier.
        mask_prob: span-mask probability (S3PRL's masking, span 10).
        unmasked_weight: weight of the unit loss on unmasked frames (masked frames weigh 1).
        cnn_grad_scale: gradient multiplier of the CNN (HuBERT's ``feature_grad_mult``).
    """
    clock = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    waves = load_waves(wave_paths)
    features = [mfcc_frames(wave) for wave in waves]
    stacked = torch.cat(features)
    centroids = kmeans(stacked, clusters, seed=seed)
    labels = [assign_clusters(f, centroids) for f in features]
    if echo:
        echo(f"    k-means: {clusters} clusters over {stacked.shape[0]} MFCC frames of {len(waves)} utterances")

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = _build_model(checkpoint)
    # Less masking and a loss on unmasked frames too than HuBERT's (0.8, masked only): with a
    # few hundred steps the model must first learn what a frame sounds like before it can infer
    # hidden frames from context. The CNN's gradient is damped as in HuBERT (0.1): at full rate
    # Adam's first steps wreck it and nothing is learnt; frozen (0), it stays a random
    # filterbank and the teacher's keyword accuracy stayed near 0.55 instead of 0.85.
    model.mask_prob = mask_prob
    model.feature_grad_mult = cnn_grad_scale
    model.train()
    # A linear softmax head over the K units instead of HuBERT's cosine logits against learnt
    # label embeddings: it learns in tens of steps, not thousands. It is discarded afterwards.
    head = torch.nn.Linear(model.mask_emb.shape[0], clusters)
    body = [p for p in model.parameters() if p.requires_grad]
    # The fresh head needs a far larger step than the body to learn anything in this budget.
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": list(head.parameters()), "lr": head_lr}],
                                  betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    counts = torch.bincount(torch.cat(labels), minlength=clusters)
    result = PretrainResult(clusters=clusters, frames=int(stacked.shape[0]), majority=float(counts.max() / counts.sum()))
    crop = int(crop_seconds * SAMPLE_RATE)
    bar = tqdm(range(steps), desc="pretrain teacher", unit="step", disable=not progress, dynamic_ncols=True)
    step = _training_step(model, head, optimizer, scheduler, unmasked_weight)
    numpy_state = np.random.get_state()
    np.random.seed(seed)  # S3PRL draws its span masks from numpy's global generator
    try:
        with single_thread():  # a few MB per op: two threads only wait on each other on a busy machine
            for _ in bar:
                loss, masked, unmasked = step(*_batch(waves, labels, batch_size, crop, generator))
                result.losses.append(loss)
                result.accuracies.append(masked)
                result.unmasked_accuracies.append(unmasked)
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{masked:.2f}")
    finally:
        np.random.set_state(numpy_state)
    bar.close()
    model.eval()
    checkpoint["model"] = model.state_dict()
    checkpoint["optimizer_history"][0]["num_updates"] = steps
    tmp = f"{path}.tmp"
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    result.seconds = time.perf_counter() - clock
    return result


def _training_step(model, head, optimizer, scheduler, unmasked_weight: float):
    """A function (source (B, S), padding (B, S), units (B, T)) -> (loss, masked acc., unmasked acc.)."""
    masks = _capture_masks(model)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]

    def step(source: Tensor, padding: Tensor, target: Tensor) -> tuple[float, float, float]:
        output = model(source, padding_mask=padding, mask=True, features_only=True)
        logits = head(output["x"])  # (B, T, K)
        valid = ~output["padding_mask"]
        mask = masks.pop()
        masked, unmasked = valid & mask, valid & ~mask
        loss = (F.cross_entropy(logits[masked], target[masked])
                + unmasked_weight * F.cross_entropy(logits[unmasked], target[unmasked]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 10.0)
        optimizer.step()
        scheduler.step()
        hits = logits.argmax(dim=-1) == target
        return float(loss.detach()), float(hits[masked].float().mean()), float(hits[unmasked].float().mean())

    return step


def _capture_masks(model) -> list:
    """Record the (B, T) span mask S3PRL's ``apply_mask`` draws on every forward."""
    masks: list = []
    draw = model.apply_mask

    def apply_mask(x, padding_mask, target_list):
        x, mask_indices = draw(x, padding_mask, target_list)
        masks.append(mask_indices)
        return x, mask_indices

    model.apply_mask = apply_mask
    return masks
