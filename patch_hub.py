#!/usr/bin/env python3
"""Register the recycle-distill upstreams in S3PRL and apply the SUPERB config tweaks.

Usage::

    python patch_hub.py <s3prl root>             # register upstreams + tweak configs
    python patch_hub.py --copy <s3prl root>      # copy upstreams/<family> into s3prl/upstream/
    python patch_hub.py --dry-run <s3prl root>   # print a unified diff, write nothing
    python patch_hub.py --revert <s3prl root>    # undo everything, byte for byte

The work is done by ``recycle_distill.s3prl.patch`` (its docstring says what is changed and
how); this script puts the repository first on sys.path so that it runs from a checkout, with
only the standard library and PyYAML, whatever recycle_distill this Python has installed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recycle_distill.cli.patch_hub import main  # noqa: E402  (needs the path above)

if __name__ == "__main__":
    sys.exit(main())
