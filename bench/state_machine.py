"""The stateful property-based test (tests/test_state_machine.py) with its long profile: ten
times the examples, three times the steps, random seeds, and failures shrunk to their shortest
reproduction. Not a benchmark of speed: a longer search for the sequences of model changes,
faults, kills and resets after which a destination stops equaling the model.

    .venv/bin/python bench/state_machine.py                 # every destination type
    .venv/bin/python bench/state_machine.py -k HubSpot      # pytest's -k and other options
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = {**os.environ, "REVERSE_ETL_STATEFUL_PROFILE": "long"}
    command = [sys.executable, "-m", "pytest", "tests/test_state_machine.py"]
    command += ["-p", "no:cacheprovider", "--timeout=0", "--hypothesis-show-statistics"]
    command += sys.argv[1:]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
