"""The family table and the release table: every fact about a student family or a published
checkpoint, stated once. Torch-free data (standard library only): ``setup.py`` reads
:data:`FAMILY_NAMES` without importing anything, ``patch_hub.py`` runs without torch, and every
part of the package that used to keep its own list reads these tables instead.

Adding a family is: a module with the block it swaps (a subclass of
:class:`recycle_distill.students.model.StudentModel`), one :class:`Family` row (here, or
:func:`register_family` at run time), and one ``upstreams/<family>/`` folder
(``docs/development.md`` walks through it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = [
    "Family", "Release", "FAMILIES", "FAMILY_NAMES", "RELEASES", "OBJECTIVES", "CITATIONS", "HF_REPO",
    "family", "register_family", "register_release", "family_titles", "releases_of", "default_release",
    "objective_refusal",
]

HF_REPO = "sungnyun/ARMHuBERT"  # the Hugging Face Hub repository of the published checkpoints

# The distillation objectives and, for a family that cannot take one, why (``{family}`` is filled in).
# The message is what ``train.objective`` says when a config asks for it.
OBJECTIVES: dict[str, str] = {
    "masking": "masking distillation needs heads and mask_emb, which {family} lacks",
    "star": "STaR needs layer outputs at the CNN frame rate; not {family}",
    "fithubert": "fithubert hints need the fithubert family (time reduction + heads)",
    "layer_hints": "layer_hints trains the projection heads, which {family} lacks",
}

# BibTeX entries, by key (a family row names its key).
CITATIONS: dict[str, tuple[str, ...]] = {
    "jang2023recycleanddistill": (
        "@inproceedings{jang2023recycleanddistill,",
        "  title={Recycle-and-Distill: Universal Compression Strategy for Transformer-based Speech SSL "
        "Models with Attention Map Reusing and Masking Distillation},",
        "  author={Jang, Kangwook and Kim, Sungnyun and Yun, Se-Young and Kim, Hoirin},",
        "  booktitle={Proc. INTERSPEECH 2023}, pages={316--320}, year={2023}", "}"),
    "jang2024star": (
        "@inproceedings{jang2024star,",
        "  title={STaR: Distilling Speech Temporal Relation for Lightweight Speech Self-Supervised "
        "Learning Models},",
        "  author={Jang, Kangwook and Kim, Sungnyun and Kim, Hoirin},",
        "  booktitle={Proc. ICASSP 2024}, pages={10721--10725}, year={2024}", "}"),
    "lee2022fithubert": (
        "@inproceedings{lee2022fithubert,",
        "  title={FitHuBERT: Going Thinner and Deeper for Knowledge Distillation of Speech Self-Supervised "
        "Learning},",
        "  author={Lee, Yeonghyeon and Jang, Kangwook and Goo, Jahyun and Jung, Youngmoon and Kim, Hoirin},",
        "  booktitle={Proc. INTERSPEECH 2022}, year={2022}", "}"),
}


@dataclass(frozen=True)
class Family:
    """One student family.

    Attributes:
        name: the family's key (``-u <name>`` in S3PRL, ``family:`` in YAMLs, the hub entry prefix).
        title: how papers and model cards spell it (``ARMHuBERT``); also the class-name prefix of
            its remote-code HF export.
        student_class: ``"module:Class"`` of its :class:`StudentModel` subclass (imported on use).
        objectives: the distillation objectives its training config accepts; the first is the
            default. Others are refused with their :data:`OBJECTIVES` message.
        hf_export: ``"hubert"`` (a plain ``transformers.HubertModel`` folder) or ``"remote"``
            (a folder with its own ``modeling_*.py``, loaded with ``trust_remote_code``).
        citation: key of its BibTeX entry in :data:`CITATIONS`.
        presets: the architecture presets (``students/presets/<name>.yaml``) of this family.
        dropped_keys: state-dict key prefixes of released checkpoints that the student does not
            use and that loading drops (STaRHuBERT's checkpoints keep the unused ``final_proj``).
        inferred_from: a ``distiller:`` key whose presence (set, or ``True``) marks a config of
            this family when no family is named; None when a config cannot tell it apart.
        reuses_attention: whether ``reuse_pattern`` means anything to it (ignored otherwise).
        time_reduction: its layers run at a reduced frame rate and its heads upsample back
            (FitHuBERT): layer hints use its own pairing, and its heads are its S3PRL features,
            so ``delete_projections`` is refused.
    """

    name: str
    title: str
    student_class: str
    objectives: tuple[str, ...]
    hf_export: str
    citation: str
    presets: tuple[str, ...] = ()
    dropped_keys: tuple[str, ...] = ()
    inferred_from: Optional[str] = None
    reuses_attention: bool = False
    time_reduction: bool = False

    @property
    def default_objective(self) -> str:
        return self.objectives[0]


@dataclass(frozen=True)
class Release:
    """One published checkpoint (a file of :data:`HF_REPO`) and its hub entry.

    Attributes:
        name: the hub entry (``armhubert_960h``).
        family: its :class:`Family` name.
        filename: the file in :data:`HF_REPO`.
        preset: the architecture preset it matches.
        teacher: the model it was distilled from.
        data: the data it was distilled on.
        paper_row: its row in ``s3prl/superb/paper_results.csv`` (None: the paper has none).
        description: one line (the hub entry's docstring).
        default: whether the family's bare entry loads it when given no checkpoint.
    """

    name: str
    family: str
    filename: str
    preset: str
    teacher: str
    data: str
    paper_row: Optional[str]
    description: str
    default: bool = False


FAMILIES: dict[str, Family] = {}
RELEASES: dict[str, Release] = {}


def register_family(row: Family) -> Family:
    """Add a family row (the shipped ones are added below; a plugin or a test may add its own)."""
    if row.name in FAMILIES and FAMILIES[row.name] != row:
        raise ValueError(f"family '{row.name}' is already registered with other facts")
    unknown = [o for o in row.objectives if o not in OBJECTIVES]
    if not row.objectives or unknown:
        raise ValueError(f"family '{row.name}': objectives must be a non-empty subset of {', '.join(OBJECTIVES)}")
    if row.hf_export not in ("hubert", "remote"):
        raise ValueError(f"family '{row.name}': hf_export must be 'hubert' or 'remote', got {row.hf_export!r}")
    if row.citation not in CITATIONS:
        raise ValueError(f"family '{row.name}': unknown citation key {row.citation!r}")
    FAMILIES[row.name] = row
    return row


def register_release(row: Release) -> Release:
    """Add a published checkpoint row; its family must be registered."""
    if row.family not in FAMILIES:
        raise ValueError(f"release '{row.name}': unknown family '{row.family}'")
    RELEASES[row.name] = row
    return row


def family(name: str) -> Family:
    """The row of ``name``; an unknown name is a ``KeyError`` that lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown student family '{name}'; known: {', '.join(FAMILIES)}") from None


def family_titles() -> dict[str, str]:
    """name -> title, in table order."""
    return {row.name: row.title for row in FAMILIES.values()}


def releases_of(name: str) -> list[Release]:
    """The published checkpoints of family ``name``, in table order."""
    return [row for row in RELEASES.values() if row.family == name]


def default_release(name: str) -> Optional[str]:
    """The hub entry the family's bare entry loads when given no checkpoint (None: none)."""
    return next((row.name for row in releases_of(name) if row.default), None)


def objective_refusal(objective: str, family_name: str) -> Optional[str]:
    """Why ``family_name`` cannot train with ``objective`` (None: it can)."""
    if objective in family(family_name).objectives:
        return None
    return OBJECTIVES[objective].format(family=family_name)


# ----------------------------------------------------------------------------- the families
for _row in (
    Family("armhubert", "ARMHuBERT", "recycle_distill.students.armhubert:ARMHuBERT",
           objectives=("masking", "star", "layer_hints"), hf_export="remote",
           citation="jang2023recycleanddistill", presets=("armhubert", "armhubert_s", "armwavlm_s"),
           inferred_from="reuse_pattern", reuses_attention=True),
    Family("maskhubert", "MaskHuBERT", "recycle_distill.students.maskhubert:MaskHuBERT",
           objectives=("masking", "star", "layer_hints"), hf_export="hubert",
           citation="jang2023recycleanddistill", presets=("maskhubert",)),
    Family("starhubert", "STaRHuBERT", "recycle_distill.students.starhubert:STaRHuBERT",
           objectives=("star",), hf_export="hubert", citation="jang2024star",
           presets=("starhubert", "starhubert_l"), dropped_keys=("final_proj.",)),
    Family("fithubert", "FitHuBERT", "recycle_distill.students.fithubert:FitHuBERT",
           objectives=("fithubert", "layer_hints"), hf_export="remote", citation="lee2022fithubert",
           presets=("fithubert",), inferred_from="enable_tr_layer", time_reduction=True),
):
    register_family(_row)

# A config that names no family and sets none of the rows' ``inferred_from`` keys is this family.
FALLBACK_FAMILY = "maskhubert"

# The shipped family names in canonical order (``setup.py`` reads this line without importing).
FAMILY_NAMES = ("armhubert", "maskhubert", "starhubert", "fithubert")

# ----------------------------------------------------------------------------- the releases
for _row in (
    Release("armhubert_960h", "armhubert", "ARMHuBERT-960h.ckpt", "armhubert", "HuBERT Base", "LibriSpeech 960h",
            "ARMHuBERT", "ARMHuBERT distilled from HuBERT Base on LibriSpeech 960h (26.45M).", default=True),
    Release("armhubert_s_100h", "armhubert", "ARMHuBERT-S-100h.ckpt", "armhubert_s", "HuBERT Base",
            "LibriSpeech 100h", None, "ARMHuBERT-S distilled on LibriSpeech 100h (22.39M)."),
    Release("armhubert_s_960h", "armhubert", "ARMHuBERT-S-960h.ckpt", "armhubert_s", "HuBERT Base",
            "LibriSpeech 960h", "ARMHuBERT-S", "ARMHuBERT-S distilled on LibriSpeech 960h (22.39M)."),
    Release("armwavlm_s_100h", "armhubert", "ARMwavLM-S-100h.ckpt", "armwavlm_s", "WavLM Base+",
            "LibriSpeech 100h", None, "ARMwavLM-S distilled from WavLM Base+ on LibriSpeech 100h (22.39M)."),
    Release("armwavlm_s_960h", "armhubert", "ARMwavLM-S-960h.ckpt", "armwavlm_s", "WavLM Base+",
            "LibriSpeech 960h", "ARMwavLM-S", "ARMwavLM-S distilled from WavLM Base+ on LibriSpeech 960h (22.39M)."),
    Release("maskhubert_960h", "maskhubert", "MaskHuBERT-960h.ckpt", "maskhubert", "HuBERT Base", "LibriSpeech 960h",
            "MaskHuBERT", "MaskHuBERT distilled from HuBERT Base on LibriSpeech 960h (26.64M).", default=True),
):
    register_release(_row)
del _row

if tuple(FAMILIES) != FAMILY_NAMES:  # the literal above is for setup.py; keep it equal to the rows
    raise ImportError(f"FAMILY_NAMES {FAMILY_NAMES} does not list the family rows {tuple(FAMILIES)}")
