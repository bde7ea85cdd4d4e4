"""`python -m embedq.worker.cli`: the module path a supervisor of embedq 0.2 starts its workers with
(the command now lives in embedq.cli); kept so a fleet mid-upgrade keeps starting workers. Goes in 0.4."""

import sys

from embedq.cli import main

if __name__ == "__main__":
    sys.exit(main())
