"""``python -m recycle_distill.superb [run_downstream.py options]``: see :mod:`recycle_distill.commands.superb`."""

import sys

from ..commands.superb import main

if __name__ == "__main__":
    sys.exit(main())
