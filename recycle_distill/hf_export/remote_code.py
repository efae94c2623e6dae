"""Generate the ``trust_remote_code`` files of an ARMHuBERT / FitHuBERT export from the one template.

:func:`render` turns :mod:`recycle_distill.hf_export.remote_template` into
``configuration_<family>.py`` and ``modeling_<family>.py`` by splitting it at its marker and
renaming ``StudentHF`` / ``student-hf``; nothing else changes, so the template (imported
and tested in this package) is exactly the code a user runs. Which families get remote code
(rows with ``hf_export="remote"``) and their class-name prefix (the row's title) come from
:mod:`recycle_distill.families`.
"""

from __future__ import annotations

from importlib import resources

from recycle_distill import families

__all__ = ["class_prefix", "render", "auto_map", "template_text"]

MARKER = "# ==== modeling ====\n"
FUTURE = "from __future__ import annotations\n"
HEADER = ('"""{kind} of a {prefix} student exported by recycle-distill (MIT licence).\n\n'
          "Generated from recycle_distill/hf_export/remote_template.py; needs only torch and transformers.\n"
          'Load with transformers.AutoModel.from_pretrained(DIR, trust_remote_code=True).\n"""\n\n')


def template_text() -> str:
    return (resources.files("recycle_distill.hf_export") / "remote_template.py").read_text(encoding="utf-8")


def class_prefix(family: str) -> str:
    """The generated classes' name prefix (``ARMHuBERT`` -> ``ARMHuBERTModel``): the row's title."""
    return families.family(family).title


def _rename(text: str, family: str) -> str:
    return text.replace("StudentHF", class_prefix(family)).replace('"student-hf"', f'"{family}"')


def render(family: str) -> dict[str, str]:
    """``{filename: source}`` of the two generated files for ``family``."""
    remote = families.exported_as("remote")
    if family not in remote:
        raise ValueError(f"no remote code for family {family!r} (only {', '.join(remote)})")
    text = template_text()
    start = text.index(FUTURE)
    config_part, model_part = text[start:].split(MARKER)
    prefix = class_prefix(family)
    config_source = HEADER.format(kind="Configuration", prefix=prefix) + _rename(config_part, family)
    model_source = (HEADER.format(kind="Model", prefix=prefix) + FUTURE + "\n"
                    + f"from .configuration_{family} import {prefix}Config\n" + _rename(model_part, family))
    return {f"configuration_{family}.py": config_source, f"modeling_{family}.py": model_source}


def auto_map(family: str) -> dict[str, str]:
    prefix = class_prefix(family)
    return {"AutoConfig": f"configuration_{family}.{prefix}Config", "AutoModel": f"modeling_{family}.{prefix}Model"}
