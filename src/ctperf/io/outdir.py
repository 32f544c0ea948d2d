"""The output folder: its file names, and writing a result set into it atomically (nothing appears unless every
file was written; a previous result set is replaced as a whole, another mode's result only with ``overwrite``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from ctperf import __version__
from ctperf.errors import InputError

#: Mode A's maps and masks in ``--out_dir`` (the names the original tool wrote).
MAP_FILES = {"cbf": "cbf.nii.gz", "cbv": "cbv.nii.gz", "mtt": "mtt.nii.gz", "tmax": "tmax.nii.gz",
             "ttp": "ttp.nii.gz", "rcbf": "rcbf.nii.gz"}
MASK_FILES = {"hypoperfusion": "hypoperf_mask_tmax6.nii.gz", "core": "core_mask_rcbf30.nii.gz",
              "penumbra": "penumbra_mask.nii.gz"}
#: NIfTI header description of each map and mask (what it holds and its unit; the thresholds are in metrics.json).
VOLUME_DESCRIPTIONS = {"cbf": "ctperf CBF mL/100g/min", "cbv": "ctperf CBV mL/100g", "mtt": "ctperf MTT s",
                       "tmax": "ctperf Tmax s", "ttp": "ctperf TTP s (from the first frame)",
                       "rcbf": "ctperf rCBF fraction of the reference (1 = normal)",
                       "hypoperfusion": "ctperf hypoperfusion mask (Tmax threshold in metrics.json)",
                       "core": "ctperf core mask (rCBF threshold in metrics.json)",
                       "penumbra": "ctperf penumbra mask (hypoperfusion minus core)"}
#: Folder of the auxiliary volumes, curves and analysis record that ``recompute`` reads.
AUX_DIR = "aux"

#: Written into every output folder: which files the last ctperf run wrote there and in which mode.
MANIFEST = "ctperf_manifest.json"
#: Files and folders earlier ctperf versions (without a manifest) wrote; replaced like a manifest's files.
_LEGACY_NAMES = (*MAP_FILES.values(), *MASK_FILES.values(), "metrics.json", "metrics.csv", "log.txt", "report.pdf",
                 "aif.csv", "vof.csv", "qa", AUX_DIR, "masks")


class atomic_output_dir:
    """Context manager: yields a temporary folder beside ``out_dir``; on success its files become the folder's
    ctperf result set, on failure nothing changes.

    The run owns its folder's ctperf files: the files an earlier run wrote there (listed in its
    :data:`MANIFEST`, or the standard names when an old version left no manifest) are replaced as one set, so a
    file the earlier run wrote and this one does not (a stale ``report.pdf``, ``qa/*.png``) is removed.  Other
    files in the folder are left alone.  The new set's manifest records ``mode`` (default: the ``mode`` of the
    ``metrics.json`` written, if any).  The mode policy (another mode's result is refused unless overwrite) is
    enforced by :func:`check_output_dir` before any analysis starts.
    """

    def __init__(self, out_dir: str | Path, replace_files: bool = True, *, mode: str | None = None):
        self.out_dir = Path(out_dir)
        self.replace_files = replace_files
        self.mode = mode

    def __enter__(self) -> Path:
        self.tmp = _make_temp_beside(self.out_dir)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        try:
            _write_manifest(self.tmp, self.mode)
            if not self.out_dir.exists():
                os.replace(self.tmp, self.out_dir)
                return False
            _replace_set(self.tmp, self.out_dir)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def _write_manifest(tmp: Path, mode: str | None) -> None:
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    if mode is None and (tmp / "metrics.json").is_file():
        try:
            mode = json.loads((tmp / "metrics.json").read_text(encoding="utf-8")).get("mode")
        except (ValueError, AttributeError):
            mode = None
    doc = {"software": "ctperf", "software_version": __version__, "mode": mode, "files": sorted([*files, MANIFEST])}
    (tmp / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def previous_result(out_dir: str | Path) -> tuple[str | None, list[str]]:
    """(mode, relative file paths) of the ctperf result already in ``out_dir`` ((None, []) when there is none)."""
    out = Path(out_dir)
    if not out.is_dir():
        return None, []
    man = out / MANIFEST
    if man.is_file():
        try:
            doc = json.loads(man.read_text(encoding="utf-8"))
            files = [f for f in doc.get("files", []) if isinstance(f, str) and ".." not in Path(f).parts]
            return doc.get("mode"), files
        except (ValueError, AttributeError, OSError):
            pass
    if not (out / "metrics.json").is_file():
        return None, []
    try:
        mode = json.loads((out / "metrics.json").read_text(encoding="utf-8")).get("mode")
    except (ValueError, AttributeError, OSError):
        mode = None
    files = []
    for name in _LEGACY_NAMES:
        p = out / name
        if p.is_dir():
            files += [q.relative_to(out).as_posix() for q in p.rglob("*") if q.is_file()]
        elif p.is_file():
            files.append(name)
    return mode, files


def _replace_set(tmp: Path, out_dir: Path) -> None:
    """Move the new file set from ``tmp`` into ``out_dir``, removing the previous run's set.

    The old files are first moved aside (same file system, so each move is a rename); if moving the new set in
    fails, they are moved back.
    """
    _, old = previous_result(out_dir)
    new = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
    aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.ctperf-old-", dir=tmp.parent))  # where tmp could be made
    moved: list[str] = []
    placed: list[str] = []
    try:
        for rel in dict.fromkeys([*old, *new]):
            src = out_dir / rel
            if src.is_file() or src.is_symlink():
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, aside / rel)
                moved.append(rel)
        for rel in new:
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, out_dir / rel)
            placed.append(rel)
    except BaseException:  # an error, or Ctrl-C mid-swap: the earlier set goes back (the CLI says it is unchanged)
        for rel in placed:
            (out_dir / rel).unlink(missing_ok=True)
        for rel in moved:
            os.replace(aside / rel, out_dir / rel)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    for rel in sorted({Path(r).parent for r in old if Path(r).parent != Path(".")}, key=lambda d: -len(d.parts)):
        try:
            (out_dir / rel).rmdir()  # only when empty: never removes the user's own files
        except OSError:
            pass


def _make_temp_beside(out_dir: Path) -> Path:
    """A new hidden folder beside ``out_dir`` (same file system: the result moves in by renames), or inside it when
    ``out_dir`` exists but its parent cannot be written (a writable folder in a read-only place)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is an existing file")
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return _new_hidden_dir(parent, f".{out_dir.name}.ctperf-tmp-")
    except OSError as exc:
        if out_dir.is_dir():
            try:
                return _new_hidden_dir(out_dir, ".ctperf-tmp-")
            except OSError:
                pass
        raise InputError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None


def _new_hidden_dir(where: Path, prefix: str) -> Path:
    for _ in range(100):
        # os.mkdir applies the process umask itself (results readable like any new folder), so the umask is never
        # read or changed here: that would race with other threads writing files at the same moment.
        tmp = where / f"{prefix}{secrets.token_hex(6)}"
        try:
            tmp.mkdir(mode=0o777)
            return tmp
        except FileExistsError:
            continue
    raise InputError(f"cannot create a temporary folder in {where}")


def check_output_dir(out_dir: str | Path, *, mode: str | None = None, overwrite: bool = False) -> None:
    """Fail early (before any analysis) when ``out_dir`` cannot be written, or holds another mode's result.

    Raises
    ------
    InputError
        ``out_dir`` is a file; its parent, or the existing folder itself, is not writable (read-only, no
        permission); or it holds a result of another mode than ``mode`` and ``overwrite`` is False.
    """
    out = Path(out_dir)
    shutil.rmtree(_make_temp_beside(out), ignore_errors=True)
    if not out.is_dir():
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".ctperf-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write to the output folder {out}: {exc.strerror or exc}") from None
    old_mode, files = previous_result(out)
    if mode is not None and files and old_mode not in (None, mode) and not overwrite:
        raise InputError(f"output folder {out} holds a Mode {old_mode} result; choose another --out_dir, or "
                         f"pass --overwrite to replace it with this Mode {mode} result")
