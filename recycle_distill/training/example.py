"""The tiny example run, ``recycle-distill train -c tiny-example``: its teacher and corpus, made on first use.

The recipe (``recipes/tiny-example.yaml``) names a teacher file and a LibriSpeech-layout corpus
under ``tiny-example-data/`` (relative to the working directory). When the config still points
at those two paths and they are missing, :func:`prepare_example` writes them: a random-weight
HuBERT in fairseq's layout as wide as the recipe's student heads, and a corpus of espeak-ng
speech (a synthetic voice, with a loud warning, where espeak-ng is missing). Paths given by the
user (``data.libri_root=DIR``, ``teacher.teacher_model=FILE``) are never written to. Both are
written beside their target and renamed into place, so an interrupted preparation is redone.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from recycle_distill.training.config import TrainConfig, load_train_config, recipe_path
from recycle_distill.util.atomic import atomic_write, atomic_write_folder

logger = logging.getLogger(__name__)

__all__ = ["EXAMPLE", "is_example", "missing_example_files", "prepare_example"]

EXAMPLE = "tiny-example"
# The teacher: tiny, HuBERT-shaped (CNN + post-LN transformer); its width is the student's head width.
TEACHER_SHAPE = dict(encoder_layers=4, encoder_ffn_embed_dim=192, encoder_attention_heads=4,
                     conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", final_dim=32)
CORPUS = dict(speakers=3, utterances_per_speaker=8, subsets=("train-clean-100", "dev-clean"), seed=0)


def is_example(config_argument: str) -> bool:
    """True when ``-c`` names the shipped tiny example (not a file of that name)."""
    return config_argument == EXAMPLE and not os.path.exists(config_argument)


def missing_example_files(config: TrainConfig) -> list[str]:
    """The example's own teacher and corpus paths that ``config`` still names and that do not exist yet."""
    recipe = load_train_config(recipe_path(EXAMPLE))
    own = [(config.teacher.teacher_model, recipe.teacher.teacher_model),
           (config.data.libri_root, recipe.data.libri_root)]
    return [path for path, default in own if path and path == default and not os.path.exists(path)]


def prepare_example(config: TrainConfig, echo: Callable[[str], None] = logger.info) -> list[str]:
    """Write the example's teacher and corpus where ``config`` expects them, if missing; returns what was written."""
    missing = missing_example_files(config)
    for path in missing:
        if path == config.teacher.teacher_model:
            echo(f"writing the tiny example's random-weight teacher to {path}")
            _write_teacher(path, width=config.student.pred_head_final_dim)
        else:
            echo(f"writing the tiny example's corpus to {path} (espeak-ng speech, a few seconds)")
            _write_corpus(path)
    return missing


def _write_teacher(path: str, width: int) -> None:
    from recycle_distill.training.teacher.random_teacher import save_random_hubert

    atomic_write(path, lambda temp: save_random_hubert(temp, encoder_embed_dim=width, **TEACHER_SHAPE),
                 prefix=".tmp-", suffix=os.path.basename(path))


def _write_corpus(root: str) -> None:
    from recycle_distill.training.data.synth import make_tiny_librispeech

    atomic_write_folder(root, lambda folder: make_tiny_librispeech(folder, **CORPUS))
