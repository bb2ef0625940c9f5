"""torch's launcher (``torch.distributed.run``) for ``tune --nproc``, quiet when a worker fails.

A worker that stops on bad input has said why in one line; the launcher would add its own report
and a traceback. This runs the launcher with its logging at errors only and, when a worker fails,
exits with that worker's exit code (2 for bad input, as in one process) instead.
"""

from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as launch


def main() -> int:
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        launch()
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        return max((code for code in codes if code > 0), default=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
