"""recycle-distill: Recycle-and-Distill speech SSL students as S3PRL upstreams, with a trainer."""

import ast
import pathlib

from setuptools import find_namespace_packages, setup

ROOT = pathlib.Path(__file__).parent


def read_constant(relative: str, name: str):
    """A literal assignment ``name = ...`` of a package file (read, not imported: nothing is installed yet)."""
    tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise RuntimeError(f"{relative} defines no {name}")


FAMILIES = list(read_constant("recycle_distill/families.py", "FAMILY_NAMES"))

# Namespace discovery also lists the data folders (presets/, recipes/, downstream_configs/),
# so their package_data is installed without setuptools' "absent from packages" warnings.
library_packages = find_namespace_packages(include=["recycle_distill", "recycle_distill.*"], exclude=["*.__pycache__"])
upstream_packages = ["recycle_distill.upstreams"] + [f"recycle_distill.upstreams.{f}" for f in FAMILIES]

setup(
    name="recycle-distill",
    version=read_constant("recycle_distill/util/version.py", "VERSION"),
    description="Compressed HuBERT students (ARMHuBERT, MaskHuBERT, STaRHuBERT, FitHuBERT) for S3PRL, in pure PyTorch",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=library_packages + upstream_packages,
    # The S3PRL-conformant folders live at the top level (upstreams/<family>) and are
    # installed as recycle_distill.upstreams.<family>, so S3PRL can import the installed copy.
    package_dir={"recycle_distill.upstreams": "upstreams"},
    package_data={"recycle_distill": ["students/presets/*.yaml", "training/recipes/*.yaml", "training/examples/*.yaml", "s3prl/superb/*.csv", "s3prl/downstream_configs/*.yaml", "s3prl/downstream_configs/*.dict", "downstreams/*/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "torchaudio>=2.1",
        "s3prl==0.4.18",
        "huggingface_hub<1.0",
        "pyyaml>=5.4",
        "safetensors>=0.4",
        "soundfile>=0.12",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # s3prl's downstreams import these without declaring them.
        "superb": ["tensorboardX", "librosa", "editdistance", "pandas"],
        "train": ["tensorboard", "soxr"],
        "demo": ["tensorboard", "soxr", "matplotlib", "tensorboardX", "librosa", "editdistance", "pandas"],
        # Hugging Face transformers: the HieraDist language-model teacher (and HF export).
        "hf": ["transformers>=4.40,<5"],
        # ONNX export (onnxscript: the dynamo exporter) and the ONNX Runtime runner / int8 quantizer.
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2"],
        "test": ["pytest>=7", "tensorboardX", "librosa", "editdistance", "pandas", "tensorboard", "soxr", "matplotlib"],
    },
    entry_points={"console_scripts": ["recycle-distill=recycle_distill.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
