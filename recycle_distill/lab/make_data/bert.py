"""A tiny random BERT folder with its own WordPiece vocabulary: the ``cif_asr`` language-model
teacher for trying things (its vectors mean nothing; its tokenizer defines the units)."""

from __future__ import annotations

import os
import pathlib
from typing import Sequence, Union

__all__ = ["BERT_SPECIALS", "write_tiny_bert"]

PathLike = Union[str, "os.PathLike[str]"]
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def write_tiny_bert(folder: PathLike, tokens: Sequence[str], hidden: int = 32, layers: int = 2, heads: int = 2,
                    seed: int = 0, max_positions: int = 64) -> pathlib.Path:
    """A random ``BertModel`` + uncased WordPiece tokenizer saved with ``save_pretrained``.

    The vocabulary is the BERT specials followed by ``tokens`` in order (duplicates dropped);
    pass ``##`` pieces among ``tokens`` where words should split (e.g. ``cat``, ``##s``), and
    Chinese characters one per token. Both ``vocab.txt`` and the fast ``tokenizer.json`` are
    written; the global torch random state is left as it was. Returns the folder.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = pathlib.Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    vocabulary = list(dict.fromkeys([*BERT_SPECIALS, *tokens]))
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=max_positions)
    tokenizer.save_pretrained(str(out))
    config = BertConfig(vocab_size=len(vocabulary), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden,
                        max_position_embeddings=max_positions, pad_token_id=0)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = BertModel(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(str(out), safe_serialization=True)
    return out
