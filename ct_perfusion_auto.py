#!/usr/bin/env python
"""Seed-compatible entry point (Mode A).  Same as `ctperf run`:

    python ct_perfusion_auto.py --dicom_dir D --out_dir O [--roi_mask M] [--contra_mask M] [--config F]

Research use only - not a medical device.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from ctperf.apps.runtime import configure_process  # noqa: E402
from ctperf.cli import run_command  # noqa: E402

if __name__ == "__main__":
    configure_process()
    sys.exit(run_command(sys.argv[1:], prog_name="ct_perfusion_auto.py", command="run"))
