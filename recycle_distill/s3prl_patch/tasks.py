"""The SUPERB tasks: where S3PRL keeps each config and which fine-tuning tweaks it gets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One SUPERB task: where S3PRL keeps its config and which tweaks it gets."""

    key: str  # SUPERB abbreviation
    title: str  # human-readable task name
    downstream: str  # S3PRL's `-d` name
    config: str  # path of the config under s3prl/downstream/
    shipped: str  # file name in downstream_configs/
    scheduler: bool = False  # uncomment the commented scheduler block
    old_lr: float | None = None  # optimizer lr expected before the patch ...
    new_lr: str | None = None  # ... and the YAML float token written instead

    @property
    def changes(self) -> list[str]:
        """Short descriptions of the tweaks this task gets (empty: none)."""
        out = []
        if self.scheduler:
            out.append("scheduler uncommented")
        if self.new_lr is not None:
            out.append(f"lr {format_lr(self.old_lr)} -> {self.new_lr}")
        return out


TASKS = (
    Task("PR", "Phoneme Recognition", "ctc", "ctc/libriphone.yaml", "ctc_libriphone.yaml", True),
    Task("KS", "Keyword Spotting", "speech_commands", "speech_commands/config.yaml",
         "speech_commands.yaml", True),
    Task("IC", "Intent Classification", "fluent_commands", "fluent_commands/config.yaml",
         "fluent_commands.yaml", True),
    Task("SID", "Speaker Identification", "voxceleb1", "voxceleb1/config.yaml", "voxceleb1.yaml",
         True, old_lr=1.0e-4, new_lr="1.0e-3"),
    Task("ER", "Emotion Recognition", "emotion", "emotion/config.yaml", "emotion.yaml", True),
    Task("ASR", "Automatic Speech Recognition", "asr", "asr/config.yaml", "asr.yaml", True),
    Task("SF", "Slot Filling", "ctc", "ctc/snips.yaml", "ctc_snips.yaml", True),
    # In git, sv_voxceleb1/config.yaml is a symlink to configs/amsoftmax.yaml: the target
    # is patched and the link is kept.
    Task("ASV", "Automatic Speaker Verification", "sv_voxceleb1", "sv_voxceleb1/config.yaml",
         "sv_voxceleb1.yaml", True),
    Task("QbE", "Query by Example", "quesst14_dtw", "quesst14_dtw/config.yaml",
         "quesst14_dtw.yaml"),
    Task("SD", "Speaker Diarization", "diarization", "diarization/config.yaml",
         "diarization.yaml"),
)


def format_lr(value: float) -> str:
    """Format a learning rate the way S3PRL's configs write it, e.g. ``1.0e-4``."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"
