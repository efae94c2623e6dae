"""S3PRL downstream expert of the CIF-HieraDist recognizer (``-d cif_asr``).

Wiring only: the corpus and units (:mod:`.dataset`, :mod:`.text`), the language-model teacher
(:mod:`.lm_teacher`, :mod:`.feature_cache`) and the recognizer (:mod:`.model`) meet here in
S3PRL's downstream contract: ``get_dataloader(split)``, ``forward(split, features, *batch,
records)``, ``log_records(...)`` returning the checkpoint names to save. Semantics: ``docs/cif.md``.
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pad_sequence

from recycle_distill.downstreams.cif_asr.config import ExpertSettings
from recycle_distill.downstreams.cif_asr.dataset import CifAsrDataset, make_dataloader, prepare_split
from recycle_distill.downstreams.cif_asr.feature_cache import FeatureCache
from recycle_distill.downstreams.cif_asr.lm_teacher import (
    LanguageModelTeacher,
    folder_fingerprint,
    load_tokenizer,
)
from recycle_distill.downstreams.cif_asr.metrics import character_error_rate, word_error_rate
from recycle_distill.downstreams.cif_asr.model import CifRecognizer
from recycle_distill.downstreams.cif_asr.spec_augment import SpecAugment
from recycle_distill.downstreams.cif_asr.text import BLANK, BOS, EOS, PAD, UnitVocabulary

logger = logging.getLogger(__name__)

VOCAB_FILE = "vocab.json"
TERMS = ("ce", "quantity", "ctc", "acd", "lrd")
SPLITS = ("train", "dev", "test")


class DownstreamExpert(nn.Module):
    """CIF recognizer on an S3PRL featurizer's output, optionally distilled from a language model.

    Args:
        upstream_dim: the featurizer's output width.
        upstream_rate: samples per upstream frame (320 = 20 ms).
        downstream_expert: the ``downstream_expert`` section of ``cif_asr.yaml``.
        expdir: the experiment folder (``vocab.json`` and hypotheses are written there).
    """

    def __init__(self, upstream_dim: int, upstream_rate: int, downstream_expert: dict, expdir: str, **kwargs: Any):
        super().__init__()
        self.settings = ExpertSettings.from_dict(downstream_expert)
        self.expdir = Path(expdir)
        corpus, lm = self.settings.corpus, self.settings.lm
        loss_cfg = self.settings.recognizer.loss
        self.cache: Optional[FeatureCache] = None
        self._teacher: list = []  # the frozen language model stays out of the module tree (and the optimizer)
        if loss_cfg.needs_lm and not lm.feature_cache:
            self._teacher.append(LanguageModelTeacher.from_dir(lm.path, device=kwargs.get("device", "cpu")))
        tokenizer = self._teacher[0].tokenizer if self._teacher else load_tokenizer(lm.path)
        # Every split is scanned and tokenised now, so bad transcripts stop the run before training.
        self.prepared = {split: prepare_split(corpus.name, corpus.root, corpus.subsets(split), tokenizer,
                                              language=corpus.language, unit_error=corpus.unit_error)
                         for split in SPLITS}
        self.language = self.prepared["train"].language
        self.vocab = UnitVocabulary.build(self.prepared["train"].unit_splits, tokenizer, self.language)
        self._save_vocab()
        # The unit -> language-model id table travels in the checkpoint with the weights.
        self.register_buffer("unit_lm_ids", torch.tensor(self.vocab.lm_ids, dtype=torch.long))
        self.register_buffer("best_error", torch.tensor(math.inf))

        lm_dim = self._teacher[0].hidden_size if self._teacher else None
        if loss_cfg.needs_lm and lm.feature_cache:
            self.cache = FeatureCache.open(lm.feature_cache, folder_fingerprint(lm.path))
            lm_dim = self.cache.hidden_size
        self.datasets: dict[str, CifAsrDataset] = {}
        self._reference_text: dict[str, dict] = {}
        if self.cache is not None:
            for split in SPLITS:
                self._dataset(split)  # checks the cache holds every utterance, before training
        self.model = CifRecognizer(self.settings.recognizer.model, loss_cfg, upstream_dim, upstream_rate,
                                   len(self.vocab), lm_dim, blank=BLANK, pad=PAD, bos=BOS, eos=EOS)
        self.generator = torch.Generator().manual_seed(self.settings.data.seed)
        # S3PRL's -m evaluate hands log_records global_step 0; the report names the step the
        # evaluated checkpoint was trained to instead.
        self.evaluated_step = checkpoint_step(kwargs.get("init_ckpt")) if kwargs.get("mode") == "evaluate" else None
        augment = self.settings.spec_augment
        self.spec_augment = SpecAugment(augment, upstream_dim, upstream_rate) if augment.enabled else None
        logger.info("cif_asr: %d units (%s), %s; ACD %.3g, LRD %.3g; teacher vectors %s", len(self.vocab),
                    self.language, {s: len(p) for s, p in self.prepared.items()}, loss_cfg.acd, loss_cfg.lrd,
                    "from " + str(lm.feature_cache) if self.cache else ("on the fly" if self._teacher else "unused"))

    # -- data --------------------------------------------------------------------------

    def _save_vocab(self) -> None:
        path = self.expdir / VOCAB_FILE
        if path.is_file():
            saved = UnitVocabulary.load(path)
            if saved != self.vocab:
                raise ValueError(f"{path} holds another unit vocabulary than the training transcripts give "
                                 "(other data or tokenizer?); use a new expdir")
            return
        self.expdir.mkdir(parents=True, exist_ok=True)
        self.vocab.save(path)

    def _dataset(self, split: str) -> CifAsrDataset:
        if split not in self.datasets:
            self.datasets[split] = CifAsrDataset(self.prepared[split], self.vocab, self.cache)
        return self.datasets[split]

    def get_dataloader(self, split: str, epoch: int = 0):
        data = self.settings.data
        if split not in SPLITS:
            self.settings.corpus.subsets(split)  # raises, naming the split names
        training = split == "train"
        return make_dataloader(self._dataset(split), data.batch_size if training else data.eval_batch_size,
                               max_seconds=data.max_seconds, shuffle=training, seed=data.seed + epoch,
                               num_workers=data.num_workers)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        saved = state_dict.get("unit_lm_ids")
        if saved is not None and not torch.equal(saved.cpu(), self.unit_lm_ids.cpu()):
            raise ValueError("the checkpoint's unit vocabulary differs from the one the training transcripts "
                             "give (another corpus or tokenizer?)")
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # -- forward ---------------------------------------------------------------------------

    def _teacher_vectors(self, lm_ids: list, cached: Optional[list], names: list) -> Optional[list]:
        if not self.settings.recognizer.loss.needs_lm:
            return None
        if cached is not None:
            return cached
        return self._teacher[0].vectors(lm_ids, names=names, batch_size=self.settings.lm.batch_size)

    def forward(self, split: str, features: list, utt_ids: list, targets: list, lm_ids: list,
                teacher: Optional[list], records: dict, **kwargs: Any) -> torch.Tensor:
        """One batch: the loss (training-mode CIF), and for dev/test also the beam-search hypotheses.
        SpecAugment (when enabled) masks the features of training batches only.

        Args:
            features: B tensors (T_i, D) from the featurizer.
            utt_ids, targets (B tensors (N_i,) without <eos>), lm_ids, teacher (B tensors
            (N_i + 1, D_lm) or None): from :func:`.dataset.collate`.
        """
        if self.spec_augment is not None and self.training and split == "train":
            features = self.spec_augment(features)
        device = features[0].device
        lengths = torch.tensor([len(f) for f in features], device=device)
        padded = pad_sequence(features, batch_first=True)
        with_eos = [torch.cat([t, t.new_tensor([EOS])]) for t in targets]
        target_lengths = torch.tensor([len(t) for t in with_eos], device=device)
        target = pad_sequence(with_eos, batch_first=True, padding_value=PAD).to(device)
        vectors = self._teacher_vectors(lm_ids, teacher, utt_ids)
        lm_vectors = None if vectors is None else pad_sequence([v.to(device) for v in vectors], batch_first=True)
        out = self.model(padded, lengths, target, target_lengths, lm_vectors, generator=self.generator)
        loss_cfg = self.settings.recognizer.loss
        for term in TERMS:
            # ACD and LRD are logged only when switched on (plain CIF does not compute them).
            if term in out.terms and (term not in ("acd", "lrd") or getattr(loss_cfg, term) > 0):
                records[term].append(float(out.terms[term].detach()))
        records["loss"].append(float(out.loss.detach()))
        records["tokens"].append(float(target_lengths.sum()))
        if not math.isnan(out.stats.get("acd_accuracy", math.nan)):
            records["acd_accuracy"].append(out.stats["acd_accuracy"])
        records["acd_skipped"].append(out.stats.get("acd_skipped", 0.0))
        if split != "train":
            hypotheses = self.model.decode(padded, lengths, self.settings.recognizer.decode)
            references = self._references(split)
            for utt_id, hyp in zip(utt_ids, hypotheses):
                records["ids"].append(utt_id)
                records["hyp"].append(self.vocab.text(self.vocab.decode(hyp), self.language))
                records["ref"].append(references[utt_id])
        return out.loss

    def _references(self, split: str) -> dict:
        """Utterance id -> reference text from the transcript's own units (units unseen in
        training count as errors instead of vanishing as <unk>)."""
        if split not in self._reference_text:
            self._reference_text[split] = {item.id: self.vocab.text(item.units.units, self.language)
                                           for item in self.prepared[split].items}
        return self._reference_text[split]

    # -- logging -----------------------------------------------------------------------------

    def log_records(self, split: str, records: dict, logger, global_step: int, **kwargs: Any) -> list:
        """Loss terms (summed terms per token), ACD accuracy and, for dev/test, CER/WER (in percent,
        as S3PRL's asr downstream reports them) to TensorBoard and stdout; returns
        ``["dev-best.ckpt"]`` when dev improves. Under ``-m evaluate`` the step reported is the
        evaluated checkpoint's."""
        if self.evaluated_step is not None and global_step == 0:
            global_step = self.evaluated_step
        tokens = sum(records.get("tokens", [])) or 1.0
        values: dict[str, float] = {"loss": sum(records["loss"]) / max(len(records["loss"]), 1)}
        for term in TERMS:
            if records.get(term):
                values[term] = sum(records[term]) / tokens
        if records.get("acd_accuracy"):
            values["acd_accuracy"] = sum(records["acd_accuracy"]) / len(records["acd_accuracy"])
        skipped = int(sum(records.get("acd_skipped", [])))
        if skipped:
            values["acd_skipped_batches"] = skipped
        save_names = []
        if records.get("hyp"):
            cer = character_error_rate(records["hyp"], records["ref"])
            wer = word_error_rate(records["hyp"], records["ref"])
            values["cer"], values["wer"] = 100.0 * cer, 100.0 * wer
            self._write_hypotheses(split, global_step, records)
            error = cer if self.language == "zh" else wer  # best_error stays a fraction, as in older checkpoints
            if split == "dev" and error < float(self.best_error):
                self.best_error.fill_(error)
                save_names.append(f"{split}-best.ckpt")
        for key, value in values.items():
            logger.add_scalar(f"cif_asr/{split}-{key}", value, global_step=global_step)
        # S3PRL's experts report on stdout (the launcher's superb.log keeps it), as its asr expert does.
        print(f"[cif_asr] {split} step {global_step}: " + " ".join(f"{k} {v:.4f}" for k, v in values.items()))
        return save_names

    def _write_hypotheses(self, split: str, step: int, records: dict) -> None:
        path = self.expdir / f"{split}-hyp-{step}.txt"
        with open(path, "w", encoding="utf-8") as handle:
            for utt_id, hyp, ref in zip(records["ids"], records["hyp"], records["ref"]):
                handle.write(f"{utt_id}\tHYP {hyp}\tREF {ref}\n")


def checkpoint_step(path: Optional[str]) -> Optional[int]:
    """The step an S3PRL ``states-*.ckpt`` / ``dev-best.ckpt`` was saved at (its ``Step``), or None
    when there is no path or it cannot be read (then the runner's step is reported).

    Loaded weights-only and memory-mapped, so no tensor is read; the runner has loaded the same
    file already, with S3PRL's plain-data classes allow-listed (the launcher, or patch_hub.py).
    """
    if not path:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        logger.warning("cif_asr: could not read the step of %s (%s); reporting the runner's", path,
                       type(err).__name__)
        return None
    step = state.get("Step") if isinstance(state, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None
