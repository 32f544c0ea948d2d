#!/usr/bin/env python
"""Seed-compatible entry point (Mode B).  Same as `ctperf maps`:

    python scripts/one_shot_from_mip.py --mip P --tmax T --cbv C --rcbf R --aif_csv A --vof_csv V --out_dir O

Research use only - not a medical device.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ctperf.apps.runtime import configure_process  # noqa: E402
from ctperf.cli import run_command  # noqa: E402

if __name__ == "__main__":
    configure_process()
    sys.exit(run_command(sys.argv[1:], prog_name="one_shot_from_mip.py", command="maps"))
