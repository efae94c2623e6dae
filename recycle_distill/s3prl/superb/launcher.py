"""Run S3PRL's own ``run_downstream`` with our upstreams registered (the CLI is
:mod:`recycle_distill.cli.superb`).

``recycle-distill superb ...`` (or ``python -m recycle_distill superb ...``) takes exactly the
options of S3PRL's ``run_downstream.py`` and:

1. applies :func:`recycle_distill.s3prl.compat.apply_compat` (a no-op on torchaudio < 2.9) before
   s3prl is imported;
2. sets every hub entry of every family (``recycle_distill.upstreams.<family>.hubconf``) as an
   attribute of ``s3prl.hub``; S3PRL's runner finds upstreams with ``getattr(s3prl.hub, -u)``,
   so ``-u armhubert -k CKPT`` works without editing S3PRL; likewise every downstream of
   ``recycle_distill/downstreams/`` (:func:`recycle_distill.downstreams.available`) becomes
   ``s3prl.downstream.<name>``, so ``-d cif_asr`` works, and the schedulers their configs name
   (``tri_stage_schedule``) become functions of ``s3prl.schedulers``;
3. allow-lists, for ``torch.load(weights_only=True)``, the few plain-data classes that S3PRL's
   own ``states-*.ckpt`` files pickle (``argparse.Namespace``), so ``-e``/``-i`` work on
   torch >= 2.6 without switching the safe loader off;
4. without ``-c`` (and without ``-e``), uses our tweaked SUPERB config for the task
   (``recycle_distill/s3prl/downstream_configs/<-d>.yaml``; ``-d ctc`` holds two tasks and needs
   ``-c``); for ASR it points ``dict_path`` at the shipped character dictionary when S3PRL's
   relative default does not exist;
5. without ``--device``, uses ``--device cpu`` when no CUDA GPU is present;
6. appends everything S3PRL prints to stdout to ``<expdir>/superb.log`` (``--no-log``: don't),
   each run headed by one line naming its mode (and an evaluation's split), so ``recycle-distill superb-score``
   finds test metrics that S3PRL only prints (ASR, PR, SF, ASV);
7. with ``--upstream_dtype fp32|bf16|int8`` (our own option, removed before S3PRL sees the
   command line), builds our upstreams in that inference precision (their ``dtype=``);
8. runs ``s3prl.run_downstream`` as ``__main__`` with the rewritten ``sys.argv``, unchanged.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import logging
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from recycle_distill.downstreams import available as available_downstreams
from recycle_distill.s3prl.compat import apply_compat
from recycle_distill.s3prl.patch.inserts import CHECKPOINT_CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_DIR",
    "HEADER",
    "LOG_NAME",
    "LaunchPlan",
    "allow_s3prl_checkpoints",
    "hub_entries",
    "plan_launch",
    "register_downstreams",
    "register_upstreams",
    "run_line",
    "shipped_config",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "downstream_configs"
ASR_DICT = CONFIG_DIR / "asr_char.dict"
LOG_NAME = "superb.log"
HEADER = "[recycle-distill superb]"
# The -d names that hold several SUPERB tasks, with the shipped config of each.
MULTI_TASK_DOWNSTREAMS = {"ctc": {"PR": "ctc_libriphone.yaml", "SF": "ctc_snips.yaml"}}
OWN_FLAGS = ("--no-log",)
OWN_OPTIONS = ("--upstream_dtype",)  # our options that take a value

# run_downstream.py's options (s3prl 0.4.18): (flags, takes a value). The launcher parses
# argv with the same option set, so abbreviations resolve exactly as S3PRL resolves them.
_RUN_DOWNSTREAM_OPTIONS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("-m", "--mode"), True), (("-t", "--evaluate_split"), True), (("-o", "--override"), True),
    (("--backend",), True), (("--local_rank",), True), (("-e", "--past_exp"), True),
    (("-i", "--init_ckpt"), True), (("-c", "--config"), True), (("-d", "--downstream"), True),
    (("-v", "--downstream_variant"), True), (("--hub",), True), (("-u", "--upstream"), True),
    (("-k", "--upstream_ckpt"), True), (("-g", "--upstream_model_config"), True),
    (("-r", "--upstream_refresh"), False), (("-f", "--upstream_trainable"), False),
    (("-s", "--upstream_feature_selection"), True), (("-l", "--upstream_layer_selection"), True),
    (("--upstream_feature_normalize",), False), (("--upstream_model_name",), True),
    (("--upstream_revision",), True), (("-n", "--expname"), True), (("-p", "--expdir"), True),
    (("-a", "--auto_resume"), False), (("--push_to_hf_hub",), True), (("--hf_hub_org",), True),
    (("--seed",), True), (("--device",), True), (("--cache_dir",), True),
    (("--verbose",), False), (("--disable_cudnn",), False),
)


def _mirror_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, prog="recycle-distill superb")
    for flags, takes_value in _RUN_DOWNSTREAM_OPTIONS:
        if takes_value:
            parser.add_argument(*flags, default=None)
        else:
            parser.add_argument(*flags, action="store_true")
    parser.add_argument("--no-log", dest="no_log", action="store_true")
    parser.add_argument("--upstream_dtype", default=None)
    return parser


def parse_run_downstream_args(argv: Sequence[str]) -> argparse.Namespace:
    """The run_downstream.py options in ``argv`` (unset ones are None/False); unknowns ignored."""
    args, _ = _mirror_parser().parse_known_args(list(argv))
    return args


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


def hub_entries() -> dict[str, Callable[..., Any]]:
    """Every public entry of every family's hubconf, by name (the torch.hub listing rule)."""
    from recycle_distill.upstreams import FAMILIES

    entries: dict[str, Callable[..., Any]] = {}
    for family in FAMILIES:
        module = importlib.import_module(f"recycle_distill.upstreams.{family}.hubconf")
        for name, value in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("_") and value.__module__ == module.__name__:
                entries[name] = value
    return entries


def with_dtype(entry: Callable[..., Any], dtype: str) -> Callable[..., Any]:
    """``entry`` building its upstream in precision ``dtype`` unless the caller names one."""

    @functools.wraps(entry)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("dtype", dtype)
        return entry(*args, **kwargs)

    return wrapped


def register_upstreams(hub: Any = None, dtype: Optional[str] = None) -> list[str]:
    """Set every hub entry on ``s3prl.hub`` (or ``hub``); returns the registered names.

    Applies the compat layer first (s3prl.hub imports torchaudio). An existing attribute of the
    same name that is not one of our hubconf functions (or a copy of one) is replaced, with a
    warning. With ``dtype``, the PyTorch entries build their upstreams in that precision
    (ONNX entries run what their file holds).
    """
    apply_compat()
    if hub is None:
        hub = importlib.import_module("s3prl.hub")
    names = []
    for name, entry in sorted(hub_entries().items()):
        if dtype is not None and not name.endswith("_onnx"):
            entry = with_dtype(entry, dtype)
        existing = getattr(hub, name, None)
        # Compared unwrapped: an entry registered before with another dtype is still ours.
        if existing is not None and inspect.unwrap(existing) is not inspect.unwrap(entry):
            module = getattr(existing, "__module__", "") or ""
            if not module.endswith(entry.__module__.rsplit(".", 2)[-2] + ".hubconf"):
                logger.warning("s3prl.hub.%s (from %s) is replaced by recycle-distill's entry", name, module)
        setattr(hub, name, entry)
        names.append(name)
    logger.debug("registered %d entries in %s", len(names), getattr(hub, "__name__", hub))
    return names


def register_downstreams() -> list[str]:
    """Make each of our downstreams (:func:`recycle_distill.downstreams.available`, e.g.
    ``cif_asr``) importable as ``s3prl.downstream.<name>`` (in ``sys.modules``), so ``-d cif_asr``
    works on an unmodified S3PRL, whose runner imports ``s3prl.downstream.<-d>.expert``; returns
    the names. A module already imported under that name is kept."""
    apply_compat()
    importlib.import_module("s3prl.downstream")
    names = available_downstreams()
    for name in names:
        package = importlib.import_module(f"recycle_distill.downstreams.{name}")
        expert = importlib.import_module(f"recycle_distill.downstreams.{name}.expert")
        sys.modules.setdefault(f"s3prl.downstream.{name}", package)
        sys.modules.setdefault(f"s3prl.downstream.{name}.expert", expert)
    register_schedulers()
    return names


def register_schedulers() -> list[str]:
    """Make the schedulers our downstreams' configs name functions of ``s3prl.schedulers``: S3PRL's
    ``get_scheduler`` evaluates ``get_<name>`` in that module's namespace. One already there (a
    checkout ``patch_hub.py`` patched imports it) is kept; returns the function names."""
    from recycle_distill.downstreams.cif_asr.tri_stage import get_tri_stage_schedule

    apply_compat()
    schedulers = importlib.import_module("s3prl.schedulers")
    own = {"get_tri_stage_schedule": get_tri_stage_schedule}
    for name, function in own.items():
        if not hasattr(schedulers, name):
            setattr(schedulers, name, function)
    return list(own)


def allow_s3prl_checkpoints() -> list[str]:
    """Allow-list the plain-data classes S3PRL's ``states-*.ckpt`` pickle for ``weights_only`` loads.

    S3PRL's runner saves ``{'Args': argparse.Namespace, 'Config': dict, 'Optimizer': ...,
    'Scheduler': ..., <model state dicts>}`` and loads it with plain ``torch.load`` (weights-only
    by default since torch 2.6). The classes are the table
    :data:`recycle_distill.s3prl.patch.inserts.CHECKPOINT_CLASSES`, which ``patch_hub.py`` also
    writes into a patched S3PRL's runner. Returns the names allowed (empty where torch has no
    ``add_safe_globals``).
    """
    import torch.serialization

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:
        return []
    allowed = [getattr(importlib.import_module(module), name) for module, name in CHECKPOINT_CLASSES]
    add(allowed)
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in allowed]


# --------------------------------------------------------------------------------------
# Planning the hand-over
# --------------------------------------------------------------------------------------


def shipped_config(downstream: str) -> Path:
    """Our tweaked SUPERB config for ``-d downstream``.

    Raises:
        ValueError: ``-d ctc`` (PR and SF share it; name one with ``-c``) or a downstream
            without a shipped SUPERB config.
    """
    if downstream in MULTI_TASK_DOWNSTREAMS:
        options = "; ".join(f"{task}: -c {CONFIG_DIR / name}"
                            for task, name in MULTI_TASK_DOWNSTREAMS[downstream].items())
        raise ValueError(f"-d {downstream} holds several SUPERB tasks; choose the config with -c ({options})")
    path = CONFIG_DIR / f"{downstream}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ValueError(f"no shipped SUPERB config for -d {downstream} (shipped: {', '.join(known)}); pass -c CONFIG.yaml")
    return path


@dataclass
class LaunchPlan:
    """What the launcher hands to ``run_downstream``, and why.

    Attributes:
        argv: the final run_downstream argv (without the program name).
        config: the config used ("" when S3PRL takes it from the -e checkpoint).
        config_note: where the config comes from.
        device_note: the device and why.
        expdir: the experiment directory, as far as the command line tells.
        log_path: where stdout is appended (None: not logged).
        mode: -m.
        split: -t for ``-m evaluate`` (``test`` by default, as S3PRL); None for other modes, which
            use every split their config names.
        overrides: overrides the launcher added to -o.
        added: the options the launcher appended to the user's argv (for display; the user's
            own -o, repeated inside an appended -o, is shown as ``<your -o>``).
        upstream_dtype: ``--upstream_dtype`` (None: the entries' default, fp32).
    """

    argv: list[str]
    config: str = ""
    config_note: str = ""
    device_note: str = ""
    expdir: Optional[str] = None
    log_path: Optional[Path] = None
    mode: Optional[str] = None
    split: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    upstream_dtype: Optional[str] = None


def run_line(plan: LaunchPlan) -> str:
    """The line heading each run in ``superb.log``: its mode, and the split an evaluation reads
    (``logs.parse_log`` reads it back to tell an evaluation's test result from training's)."""
    return f"{HEADER} run: mode={plan.mode}" + (f" split={plan.split}" if plan.split is not None else "")


def _strip_own_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` without the launcher's own flags and options (run_downstream would reject them)."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in OWN_OPTIONS:
            skip = True
        elif token not in OWN_FLAGS and not token.startswith(tuple(f"{o}=" for o in OWN_OPTIONS)):
            out.append(token)
    return out


def _expdir(args: argparse.Namespace) -> Optional[str]:
    """The expdir run_downstream will use: -p, result/downstream/<-n>, or the -e checkpoint's folder."""
    if args.past_exp:
        past = os.path.expanduser(args.past_exp)
        return past if os.path.isdir(past) else (os.path.dirname(past) or ".")
    if args.expdir:
        return args.expdir
    return f"result/downstream/{args.expname}"


def plan_launch(argv: Sequence[str], cuda_available: Optional[bool] = None, cwd: Optional[str] = None) -> LaunchPlan:
    """Rewrite ``argv`` for run_downstream: config, device and overrides added as documented.

    Options are only ever appended (argparse keeps the last value of a repeated option), so
    everything the user wrote reaches S3PRL as written.

    Raises:
        ValueError: no ``-c`` for a downstream that needs one (see :func:`shipped_config`).
    """
    args = parse_run_downstream_args(argv)
    out: list[str] = []  # appended options
    shown: list[str] = []  # the same, with the user's -o abbreviated
    split = (args.evaluate_split or "test") if args.mode == "evaluate" else None
    plan = LaunchPlan(argv=[], mode=args.mode, split=split)
    if args.upstream_dtype is not None:
        from recycle_distill.inference.precision import parse_precision

        plan.upstream_dtype = parse_precision(args.upstream_dtype, "--upstream_dtype")
    cwd = cwd or os.getcwd()
    if args.config:
        plan.config, plan.config_note = args.config, "given with -c"
    elif args.past_exp:
        plan.config_note = "from the -e checkpoint, as S3PRL does"
    elif args.downstream:
        path = shipped_config(args.downstream)
        plan.config = str(path)
        plan.config_note = f"recycle-distill's tweaked SUPERB config for -d {args.downstream}; -c overrides"
        if args.auto_resume:
            plan.config_note += "; with -a, a checkpoint in the expdir supplies the config instead"
        out += ["-c", plan.config]
        shown += ["-c", plan.config]
        user_overrides = args.override or ""
        relative_dict = Path(cwd) / "downstream" / "asr" / "char.dict"
        if args.downstream == "asr" and "dict_path" not in user_overrides and not relative_dict.is_file():
            plan.overrides.append(f"config.downstream_expert.datarc.dict_path={ASR_DICT}")
    if plan.overrides:
        user = args.override if args.override and args.override.lower() != "none" else None
        out += ["-o", ",,".join(([user] if user else []) + plan.overrides)]
        shown += ["-o", ("<your -o>,," if user else "") + ",,".join(plan.overrides)]
    if args.device:
        plan.device_note = f"{args.device} (given)"
    else:
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        if cuda_available:
            plan.device_note = "cuda (S3PRL's default; a GPU is present)"
        else:
            out += ["--device", "cpu"]
            shown += ["--device", "cpu"]
            plan.device_note = "cpu (no CUDA GPU found; --device overrides)"
    plan.added = shown
    plan.argv = _strip_own_flags(argv) + out
    plan.expdir = _expdir(args)
    if not args.no_log and plan.expdir is not None:
        plan.log_path = Path(plan.expdir) / LOG_NAME
    return plan


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def hand_over(argv: Sequence[str]) -> int:
    """Run ``s3prl.run_downstream`` as ``__main__`` with ``argv``; returns its exit status."""
    saved = sys.argv
    sys.argv = ["run_downstream.py", *argv]
    try:
        runpy.run_module("s3prl.run_downstream", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0
