"""Replace the bundled NiiVue viewer (src/ctperf/apps/web/static/niivue.umd.js) with another npm release.

Usage: python scripts/update_niivue.py VERSION   (needs npm; downloads the package tarball from the npm registry)

The web app loads this single UMD file from its own static folder, so it needs no network at run time.  The
version is recorded in static/NIIVUE_LICENSE.txt together with NiiVue's BSD-2-Clause licence.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "src" / "ctperf" / "apps" / "web" / "static"


def main(version: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["npm", "pack", f"@niivue/niivue@{version}"], cwd=d, check=True, capture_output=True)
        tgz = next(Path(d).glob("niivue-niivue-*.tgz"))
        with tarfile.open(tgz) as tar:
            tar.extractall(d, filter="data")
        pkg = json.loads((Path(d) / "package" / "package.json").read_text())
        if pkg.get("license") != "BSD-2-Clause":
            sys.exit(f"licence changed to {pkg.get('license')}: review before bundling")
        shutil.copy(Path(d) / "package" / "dist" / "niivue.umd.js", STATIC / "niivue.umd.js")
    notice = STATIC / "NIIVUE_LICENSE.txt"
    notice.write_text(re.sub(r"version \S+\n", f"version {pkg['version']}\n", notice.read_text(), count=1))
    print(f"bundled @niivue/niivue {pkg['version']} ({(STATIC / 'niivue.umd.js').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "latest")
