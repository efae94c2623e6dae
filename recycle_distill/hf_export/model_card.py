"""The ``README.md`` model card of a Hugging Face export (front matter with ``model-index``).

The card states the architecture, the parameter count, the family, the teacher and the
training data; for a student this package trained, also the objective, steps and precision of
its run (the ``provenance`` its checkpoint records, :mod:`recycle_distill.training.provenance`). Published SUPERB numbers (``recycle_distill/s3prl/superb/paper_results.csv``) are
added only when the weights are a published release, recognised by the hub entry they were
loaded through or by the source file's sha256 (:data:`PUBLISHED_SHA256`). Published weights
carry the publisher's licence ("as stated by the publisher"); anything else is ours, MIT. What a
release is (teacher, data, paper row) and each family's title and citation come from the tables
of :mod:`recycle_distill.families`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from importlib import resources
from typing import Any, Optional

import yaml

from recycle_distill import families
from recycle_distill.util.safe_yaml import safe_load_bounded

__all__ = ["PUBLISHED_SHA256", "identify_release", "file_sha256", "paper_results", "model_card", "article",
           "describe_teacher", "describe_data"]


# sha256 of a published file -> its hub entry. Only hashes checked against the published
# files belong here; none could be checked offline, so a file is recognised by the hub entry
# it was loaded through until they are added.
PUBLISHED_SHA256: dict[str, str] = {}

# paper_results.csv column -> (metric type, unit text) for the model-index.
SUPERB_COLUMNS = {
    "PR": ("per", "PER %"), "KS": ("accuracy", "accuracy %"), "IC": ("accuracy", "accuracy %"),
    "SID": ("accuracy", "accuracy %"), "ER": ("accuracy", "accuracy %"), "ASR": ("wer", "WER %"),
    "QbE": ("mtwv", "MTWV"), "SF_F1": ("f1", "F1 %"), "SF_CER": ("cer", "CER %"), "ASV": ("eer", "EER %"),
    "SD": ("der", "DER %"),
}
# A card of a family the table does not know cites the Recycle-and-Distill paper.
DEFAULT_CITATION = "jang2023recycleanddistill"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identify_release(hub_entry: Optional[str] = None, source_file: Optional[str] = None) -> Optional[str]:
    """The hub entry name of a published release, from the entry used or the file's sha256."""
    if hub_entry in families.RELEASES:
        return hub_entry
    if source_file is not None and PUBLISHED_SHA256:
        return PUBLISHED_SHA256.get(file_sha256(source_file))
    return None


def paper_results(row: str) -> dict[str, float]:
    """The published SUPERB numbers of one model row (column -> value)."""
    text = (resources.files("recycle_distill.s3prl.superb") / "paper_results.csv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    for record in csv.DictReader(io.StringIO("\n".join(lines))):
        if record["model"] == row:
            return {key: float(value) for key, value in record.items() if key != "model" and value}
    raise KeyError(f"no row {row!r} in paper_results.csv")


def _model_index(name: str, results: dict[str, float]) -> list[dict[str, Any]]:
    entries = []
    for column, value in results.items():
        if column not in SUPERB_COLUMNS:
            continue
        metric, unit = SUPERB_COLUMNS[column]
        entries.append({
            "task": {"type": "feature-extraction", "name": f"SUPERB {column.replace('_', ' ')}"},
            "dataset": {"type": "superb", "name": "SUPERB"},
            "metrics": [{"type": metric, "value": value, "name": f"{column} ({unit})"}],
            "source": {"name": "the paper's SUPERB table (recycle_distill/s3prl/superb/paper_results.csv)"},
        })
    return [{"name": name, "results": entries}]


def article(word: str) -> str:
    """``An`` before a vowel letter (An ARMHuBERT), else ``A`` (A FitHuBERT)."""
    return "An" if word[:1].upper() in "AEIOU" else "A"


def describe_teacher(record: dict[str, Any]) -> str:
    """A provenance ``teacher`` record as card text: ``name (kind, sha256 ...)``."""
    digest = f", sha256 {record['sha256']}" if record.get("sha256") else ""
    return f"{record.get('name', 'unknown')} ({record.get('kind', 'unknown kind')}{digest})"


def describe_data(record: dict[str, Any]) -> str:
    """A provenance ``data`` record as card text: ``folders (hours h, utterances utterances)``."""
    folders = ", ".join(str(folder) for folder in record.get("folders", [])) or "unknown folders"
    return f"{folders} ({record.get('hours', 0):g} h, {record.get('utterances', 0)} utterances)"


def _cell(value: Any, limit: int = 500) -> str:
    """A value as one markdown table cell: one line, pipes escaped, bounded (records come from files)."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + " ..."


def _run_rows(provenance: dict[str, Any]) -> list[str]:
    """Card table rows for the run's objective, steps, precision and trainer (those recorded)."""
    names = (("objective", "objective"), ("steps", "optimizer steps"), ("precision", "precision"),
             ("trainer", "trained with"))
    return [f"| {label} | {_cell(provenance[key])} |" for key, label in names if provenance.get(key) is not None]


def model_card(*, family: str, parameters: int, config: dict[str, Any], plain: bool, release: Optional[str],
               teacher: Optional[str], data: Optional[str], heads_file: Optional[str],
               provenance: Optional[dict[str, Any]] = None) -> str:
    """The README.md text: YAML front matter (model-index, our metadata) and the card body.

    ``teacher`` and ``data`` (given by hand) come first, then what ``provenance`` (the record of a
    student trained here) says, then a published release's, else "unknown"."""
    published = families.RELEASES.get(release) if release else None
    row = families.FAMILIES.get(family)
    title = row.title if row else family
    provenance = provenance or {}
    if teacher is None and isinstance(provenance.get("teacher"), dict):
        teacher = describe_teacher(provenance["teacher"])
    if data is None and isinstance(provenance.get("data"), dict):
        data = describe_data(provenance["data"])
    teacher = teacher or (published.teacher if published else "unknown (not recorded in the checkpoint)")
    data = data or (published.data if published else "unknown (not recorded in the checkpoint)")
    name = release or f"{family}-student"
    results = paper_results(published.paper_row) if published and published.paper_row else {}
    front: dict[str, Any] = {
        "license": "other" if published else "mit",
        "library_name": "transformers",
        "tags": ["audio", "speech", "self-supervised-learning", "knowledge-distillation", "recycle-distill", family],
        "recycle_distill": {"family": family, "parameters": parameters, "teacher": teacher, "data": data,
                            "release": release},
    }
    if provenance:
        front["recycle_distill"]["provenance"] = provenance
    if published:
        front["license_name"] = "as stated by the publisher"
    if results:
        front["model-index"] = _model_index(name, results)
    body = [f"# {name}", "",
            f"{article(title)} {title} speech encoder ({parameters:,} parameters) exported by recycle-distill.", "",
            "| | |", "|---|---|",
            f"| family | {family} |", f"| parameters | {parameters:,} |",
            f"| layers x width | {config['encoder_layers']} x {config['encoder_embed_dim']} "
            f"(FFN {config['encoder_ffn_embed_dim']}, {config['encoder_attention_heads']} heads) |",
            f"| teacher | {_cell(teacher)} |", f"| data | {_cell(data)} |", *_run_rows(provenance),
            f"| licence | {'as stated by the publisher (published weights)' if published else 'MIT'} |", "",
            "## Use", "", "```python", "import torch", "from transformers import AutoModel", "",
            f"model = AutoModel.from_pretrained(DIR{'' if plain else ', trust_remote_code=True'}).eval()",
            "wave = torch.zeros(1, 16000)  # 16 kHz, not normalised",
            "out = model(wave, attention_mask=torch.ones_like(wave, dtype=torch.long), output_hidden_states=True)"]
    if plain and heads_file:
        body += ["", f"# {title}'s S3PRL features: the projection heads on each layer output",
                 "from safetensors.torch import load_file", "import torch.nn.functional as F",
                 f"heads = load_file(f'{{DIR}}/{heads_file}')",
                 "feats = [F.linear(h, heads[f'proj_head.{i}.lin_proj.weight'], heads[f'proj_head.{i}.lin_proj.bias'])",
                 "         for i, h in enumerate(out.hidden_states[1:])]"]
    elif plain:
        body += [f"feats = out.hidden_states[1:]  # {title}'s S3PRL features: the layer outputs"]
    else:
        body += ["feats = out.s3prl_hidden_states  # what the S3PRL upstream returns",
                 "heads = out.projection_states  # the prediction heads' outputs"]
    body += ["```", "", "The folder also loads back with `recycle_distill.load_student(DIR)` and as an S3PRL "
             f"upstream (`-u {family} -k DIR`)."]
    if results:
        body += ["", "## Published SUPERB results", "", "| task | value |", "|---|---|"]
        body += [f"| {column} ({SUPERB_COLUMNS[column][1]}) | {value:g} |" for column, value in results.items()
                 if column in SUPERB_COLUMNS]
        body += [f"| Overall | {results['Overall']:g} |"] if "Overall" in results else []
    citation = families.CITATIONS[row.citation if row else DEFAULT_CITATION]
    body += ["", "## Citation", "", "```bibtex", *citation, "```", ""]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body)


def read_card_metadata(text: str) -> dict[str, Any]:
    """The front matter of a card written by :func:`model_card`."""
    if not text.startswith("---\n"):
        raise ValueError("no YAML front matter")
    return safe_load_bounded(text[4:text.index("\n---\n", 4)])
