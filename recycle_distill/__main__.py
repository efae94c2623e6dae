"""``python -m recycle_distill <command> ...``: the same as the ``recycle-distill`` command.

``torchrun --nproc_per_node 2 -m recycle_distill train -c conf.yaml`` starts one trainer per process.
"""

import sys

from recycle_distill.cli import main

if __name__ == "__main__":
    sys.exit(main())
