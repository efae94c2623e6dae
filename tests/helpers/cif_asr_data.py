"""Test helpers for the CIF-HieraDist downstream: a tiny random BERT and tiny spoken corpora.

``write_tiny_bert`` writes a Hugging Face folder (random ``BertModel`` + WordPiece tokenizer
with its own vocabulary); ``make_librispeech_corpus`` / ``make_aishell_corpus`` speak given
texts with espeak-ng (``en-us`` voices, Mandarin ``cmn``) at 16 kHz in the real corpora's
layouts, falling back loudly to synthetic tones where espeak-ng is missing.
"""

from __future__ import annotations

import pathlib
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import soundfile
import torch

from recycle_distill.training.data.synth import espeak_available, speak, warn_no_espeak

SAMPLE_RATE = 16000
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
EN_VOICES = ("en-us+m1", "en-us+f2", "en-us+m3", "en-us+f4")
CMN_PITCHES = (35, 55, 75)


def write_tiny_bert(folder, tokens: Sequence[str], hidden: int = 32, layers: int = 2, heads: int = 2,
                    seed: int = 0, max_positions: int = 64) -> pathlib.Path:
    """A random ``BertModel`` + uncased WordPiece tokenizer saved with ``save_pretrained``.

    The vocabulary is the BERT specials followed by ``tokens`` in order (duplicates dropped);
    pass ``##`` pieces among ``tokens`` where words should split (e.g. ``cat``, ``##s``), and
    Chinese characters one per token. Both ``vocab.txt`` and the fast ``tokenizer.json`` are
    written. Returns the folder.
    """
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


def _render(jobs: list[tuple[pathlib.Path, str, str, int, int, str]], use_espeak: bool) -> None:
    def one(job) -> None:
        path, text, voice, pitch, seed, audio_format = job
        samples = speak(text, voice, pitch, use_espeak=use_espeak, seed=seed)
        soundfile.write(str(path), samples, SAMPLE_RATE, format=audio_format, subtype="PCM_16")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, jobs))


def _espeak_choice() -> bool:
    available = espeak_available()
    if not available:
        warn_no_espeak()
    return available


def make_librispeech_corpus(root, texts: dict[str, list[str]], voices: Sequence[str] = EN_VOICES) -> pathlib.Path:
    """Speak ``texts`` (subset -> sentences) into ``<root>/<subset>/<spk>/<chapter>/`` as LibriSpeech.

    Utterance ``k`` of a subset goes to speaker ``k % len(voices)`` (its own voice), one chapter
    per speaker; ``.trans.txt`` holds the upper-cased text; audio is 16 kHz FLAC. Speaker ids
    are ``100 + 10 * subset number + speaker``, chapters ``speaker id * 10``.
    """
    base = pathlib.Path(root)
    use_espeak = _espeak_choice()
    jobs = []
    for subset_number, (subset, sentences) in enumerate(texts.items()):
        lines: dict[pathlib.Path, list[str]] = {}
        for number, sentence in enumerate(sentences):
            speaker_number = number % len(voices)
            speaker = 100 + 10 * subset_number + speaker_number
            chapter = speaker * 10
            folder = base / subset / str(speaker) / str(chapter)
            folder.mkdir(parents=True, exist_ok=True)
            utt_id = f"{speaker}-{chapter}-{number:04d}"
            lines.setdefault(folder / f"{speaker}-{chapter}.trans.txt", []).append(f"{utt_id} {sentence.upper()}")
            jobs.append((folder / f"{utt_id}.flac", sentence, voices[speaker_number], 50, number, "FLAC"))
        for path, content in lines.items():
            path.write_text("\n".join(content) + "\n", encoding="utf-8")
    _render(jobs, use_espeak)
    return base


def make_aishell_corpus(root, texts: dict[str, list[str]], speakers: int = 2) -> pathlib.Path:
    """Speak ``texts`` (split -> transcripts) into the AISHELL-1 layout with espeak-ng's ``cmn`` voice.

    Writes ``<root>/wav/<split>/S<nnnn>/BAC009S<nnnn>W<mmmm>.wav`` (16 kHz PCM) and one
    ``<root>/transcript/aishell_transcript_v0.8.txt`` with ``<id> <transcript>`` lines for all
    splits, sorted by id as in the real file. Utterance ``k`` of a split goes to speaker
    ``k % speakers`` (a pitch per speaker).
    """
    base = pathlib.Path(root)
    use_espeak = _espeak_choice()
    jobs, lines = [], []
    for split_number, (split, sentences) in enumerate(texts.items()):
        for number, sentence in enumerate(sentences):
            speaker_number = number % speakers
            speaker = f"S{2 + 100 * split_number + speaker_number:04d}"
            utt_id = f"BAC009{speaker}W{number + 1:04d}"
            folder = base / "wav" / split / speaker
            folder.mkdir(parents=True, exist_ok=True)
            lines.append(f"{utt_id} {sentence}")
            pitch = CMN_PITCHES[speaker_number % len(CMN_PITCHES)]
            jobs.append((folder / f"{utt_id}.wav", sentence.replace(" ", ""), "cmn", pitch, number, "WAV"))
    transcript = base / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.parent.mkdir(parents=True, exist_ok=True)
    transcript.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    _render(jobs, use_espeak)
    return base
