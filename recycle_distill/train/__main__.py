"""``python -m recycle_distill.train -c conf.yaml [section.key=value ...]``."""

import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
