"""``recycle-distill superb-smoke``: a few SUPERB tasks (KS, SID, ASR) for a few steps each on a
``make-data`` folder, against any upstream, reported as one table, so a new student is checked
end to end before GPU days are spent on it.

- ``tasks``: the tasks, their data and the overrides that make each run tiny;
- ``child``: one task in its own process, through the launcher's steps;
- ``events``: the training loss read back from S3PRL's TensorBoard files;
- ``run``: the runs, the rows, the table.
"""

from recycle_distill.lab.smoke.run import SmokeRow, format_table, run_smoke
from recycle_distill.lab.smoke.tasks import TASKS

__all__ = ["SmokeRow", "TASKS", "format_table", "run_smoke"]
