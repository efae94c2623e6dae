"""Lay a tiny LibriSpeech-style corpus out as VoxCeleb1 so S3PRL's SID downstream can train on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

__all__ = ["make_voxceleb1_layout"]


def make_voxceleb1_layout(librispeech_root: Union[str, os.PathLike], out: Union[str, os.PathLike],
                          subset: str = "train-clean-100") -> dict[str, int]:
    """Link each speaker's utterances into ``<out>/{dev,test}/wav/id100NN/<chapter>/<n>.flac``.

    S3PRL's voxceleb1 reads ``iden_split.txt`` (1 = train, 2 = dev, 3 = test) and looks for
    split-3 files under ``test/wav``. Per speaker the last utterance is test, the one before
    dev, the rest train. Files are symlinked (copied where links are not possible).

    Returns:
        counts per split, e.g. ``{"train": 36, "dev": 6, "test": 6, "speakers": 6}``.
    """
    root, out = Path(librispeech_root) / subset, Path(out)
    speakers = sorted(p for p in root.iterdir() if p.is_dir())
    if not speakers:
        raise ValueError(f"no speaker folders under {root}")
    lines, counts = [], {"train": 0, "dev": 0, "test": 0, "speakers": len(speakers)}
    for number, speaker_dir in enumerate(speakers):
        utterances = sorted(speaker_dir.rglob("*.flac"))
        if len(utterances) < 3:
            raise ValueError(f"speaker {speaker_dir.name} has {len(utterances)} utterances; SID needs >= 3")
        speaker = f"id{10001 + number}"  # S3PRL labels speakers as int(id) - 10001
        for index, source in enumerate(utterances):
            split = 3 if index == len(utterances) - 1 else 2 if index == len(utterances) - 2 else 1
            relative = f"{speaker}/{source.parent.name}/{index + 1:05d}.flac"
            target = out / ("test" if split == 3 else "dev") / "wav" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                try:
                    target.symlink_to(source.resolve())
                except OSError:
                    target.write_bytes(source.read_bytes())
            lines.append(f"{split} {relative}\n")
            counts[{1: "train", 2: "dev", 3: "test"}[split]] += 1
    (out / "iden_split.txt").write_text("".join(lines))
    return counts
