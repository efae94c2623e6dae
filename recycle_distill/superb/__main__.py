"""``python -m recycle_distill.superb [run_downstream.py options]``: see :mod:`recycle_distill.superb.launcher`."""

import sys

from .launcher import main

if __name__ == "__main__":
    sys.exit(main())
