"""Are the committed reports current? ``dvc status`` read the way a clean clone needs it read.

A clean clone has no DVC cache and no prepared data, so ``dvc status`` there reports the prepared datasets
as missing; that is expected (they are rebuilt from raw sources) and not staleness. Stale is: a stage whose
code or params changed since ``dvc.lock`` was written, a changed command, or a committed output (records,
reports) that differs from the lock.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ABSENT = {"deleted", "not in cache"}


def stale_stages(repo: Path = Path("."), dvc: str = "dvc") -> dict[str, list[str]]:
    """Stage -> reasons it is stale (empty dict: everything committed is current)."""
    out = subprocess.run(
        [dvc, "status", "--json"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    status = json.loads(out or "{}")
    produced = _cached_outputs(repo)
    stale: dict[str, list[str]] = {}
    for stage, changes in status.items():
        reasons = []
        for change in changes:
            if not isinstance(change, dict):
                reasons.append(str(change))
                continue
            for path, state in change.get("changed deps", {}).items():
                if isinstance(state, dict):  # a params file: {key: "modified" | "new" | "deleted"}
                    reasons += [f"parameter {key} ({path}) {how}" for key, how in state.items()]
                elif not (state in ABSENT and path in produced):
                    reasons.append(f"dependency {path} {state}")
            for path, state in change.get("changed outs", {}).items():
                if not (state in ABSENT and path in produced):
                    reasons.append(f"output {path} {state}")
            reasons += [
                f"parameter {p} {s}" for f in change.get("changed params", {}).values() for p, s in f.items()
            ]
            if change.get("changed command"):
                reasons.append("command changed")
        if reasons:
            stale[stage] = reasons
    return stale


def _cached_outputs(repo: Path) -> set[str]:
    """Outputs that live in the DVC cache (not in git): absent on a clean clone by design."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text()) if (repo / "dvc.lock").is_file() else {}
    cached = set()
    for stage in (lock or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            cached.add(out["path"])
    committed = {line for line in _git_files(repo)}
    return {path for path in cached if not any(f == path or f.startswith(path + "/") for f in committed)}


def _git_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout
    return out.splitlines()
