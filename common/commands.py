"""What a researcher does by hand on top of the pipeline: reproduce one paper, read its tables in the terminal,
open the MLflow UI, see which reports are stale. The ``repro`` subcommands of the same names call these.

Nothing here is a second pipeline: ``reproduce`` runs ``dvc repro`` on the paper's stage (a try of another
profile or parameter runs the same stages' commands in a workspace of its own under tries/),
``show`` reads the report that stage wrote, ``ui`` starts ``mlflow ui`` on the store the runs were logged to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from common.params import ConfigError

# --------------------------------------------------------------------------------------------
# executables beside this Python (the venv), which the DVC stages also need first on PATH
# --------------------------------------------------------------------------------------------


def executable(name: str) -> str:
    """``name`` from this interpreter's bin directory (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"`{name}` is not installed here; run `make` (or `pip install -e .`) first")
    return found


def stage_env() -> dict[str, str]:
    """The environment for ``dvc``: the stages run ``python -m ...``, which must be this venv's python."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# --------------------------------------------------------------------------------------------
# repro reproduce PAPER
# --------------------------------------------------------------------------------------------


def _dvc_stages(dvc_yaml: Path) -> list[str]:
    import yaml

    if not dvc_yaml.is_file():
        raise ConfigError(f"{dvc_yaml} does not exist: run `repro` from the repository root")
    return list((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))


def reproduce_command(
    paper: str,
    dataset: str | None = None,
    force: bool = False,
    dry: bool = False,
    dvc_yaml: Path = Path("dvc.yaml"),
) -> list[str]:
    """The DVC command that rebuilds one paper: ``dvc repro report-PAPER`` (or one dataset's run stage).

    Another profile or a changed parameter is a try, never a DVC run here (see ``run_try``).
    """
    from common.paper import load_paper
    from common.pipeline import report_stage, run_stage

    load_paper(paper)  # an unknown paper names the known ones
    stages = _dvc_stages(dvc_yaml)
    target = run_stage(paper, dataset) if dataset else report_stage(paper)
    if target not in stages:
        if dataset:
            known = sorted(s.removeprefix(f"run-{paper}-") for s in stages if s.startswith(f"run-{paper}-"))
            raise ConfigError(
                f"{paper} has no dataset {dataset!r} in {dvc_yaml} (its datasets: {', '.join(known) or 'none'}); "
                "after adding one to params.yaml run `repro dvc-yaml`"
            )
        raise ConfigError(
            f"{dvc_yaml} has no stage {target}: the paper was added after dvc.yaml was written; "
            "run `repro dvc-yaml` (and commit dvc.yaml)"
        )
    return [executable("dvc"), "repro", *(["--force"] if force else []), *(["--dry"] if dry else []), target]


# A try: another profile or a changed parameter runs in a workspace of its own under tries/, never in the
# repository's records, reports, params.yaml, dvc.lock or MLflow store.
TRIES = Path("tries")
NOT_COPIED = ("records/", "reports/", "dvc.lock", "tries/")
# what a try writes in its workspace, kept from one run of the try to the next
TRY_OUTPUTS = ("records/", "reports/", "checkpoints/", "mlflow.db", "mlartifacts/", "data/")


def try_store(workspace: Path) -> str:
    """The MLflow store of the try in ``workspace``: its own SQLite database."""
    return f"sqlite:///{(workspace / 'mlflow.db').resolve()}"


def try_name(profile: str, sets: Sequence[str]) -> str:
    """The try's folder under tries/: its profile and changes, e.g. ``smoke`` or
    ``cpu_arcface.train.optimizer.lr=0.01`` (long names end in a hash of the whole)."""
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join([profile, *sets]))
    if len(name) > 80:
        digest = hashlib.sha256("\0".join([profile, *sets]).encode()).hexdigest()[:10]
        name = f"{name[:60]}-{digest}"
    return name


def apply_sets(params: dict, sets: Sequence[str]) -> dict:
    """``params`` with each ``KEY=VALUE`` applied (a dotted key; the value read as YAML, as `dvc exp run -S`
    does); a key below something that is not a mapping is refused, naming it."""
    import copy

    out = copy.deepcopy(params)
    for item in sets:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set arcface.train.optimizer.lr=0.01"
            )
        key, value = item.split("=", 1)
        node = out
        *parents, last = key.split(".")
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: i + 1])
                raise ConfigError(f"--set {item!r}: params.yaml's {where} is {node!r}, not a mapping of keys")
        node[last] = _yaml_value(value)
    return out


def _yaml_value(text: str) -> object:
    """A value as YAML 1.2 reads it (``1e-2`` is a number, where PyYAML's YAML 1.1 reads a string)."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str) and value == text.strip():
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def _copied_files(root: Path) -> list[str]:
    """The files a try copies: what git tracks or would track (untracked, not ignored), less the
    repository's results; outside a git repository, the files of common/, papers/ and the top level."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if listing.returncode == 0:
        files = [f for f in listing.stdout.split("\0") if f]
    else:
        files = [f.name for f in root.iterdir() if f.is_file()]
        files += [str(f.relative_to(root)) for d in ("common", "papers") for f in (root / d).rglob("*.py")]
        files += [str(f.relative_to(root)) for f in (root / "papers").rglob("*.yaml")]
    return sorted(f for f in files if not f.startswith(NOT_COPIED) and (root / f).is_file())


def prepare_try(paper: str, profile: str, sets: Sequence[str], root: Path = Path(".")) -> Path:
    """The workspace ``tries/<name>`` of this try, made or brought up to date: a copy of the repository's
    code and papers, ``data/prepared`` linked to the repository's, and ``params.yaml`` with the profile and
    changes applied. Its records, reports, checkpoints and MLflow store (``mlflow.db``) stay, so a try
    run again resumes and skips what it has done."""
    import yaml

    params = apply_sets(
        yaml.safe_load((root / "params.yaml").read_text()) or {}, [f"profile={profile}", *sets]
    )
    workspace = root / TRIES / try_name(profile, sets)
    files = _copied_files(root)
    if workspace.is_dir():  # a file the repository no longer has goes from the copy too
        copied = set(files)
        for old in [p for p in workspace.rglob("*") if p.is_file() and not p.is_symlink()]:
            name = old.relative_to(workspace).as_posix()
            if not name.startswith(TRY_OUTPUTS) and name != "params.yaml" and name not in copied:
                old.unlink()
    for name in files:
        target = workspace / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (workspace / "data").mkdir(exist_ok=True)
    prepared = workspace / "data" / "prepared"
    if not prepared.is_symlink():
        prepared.symlink_to((root / "data" / "prepared").resolve(), target_is_directory=True)
    return workspace


def try_commands(
    paper: str, dataset: str | None, workspace: Path, root: Path = Path(".")
) -> list[tuple[Path, list[str]]]:
    """What a try runs, and where: the data preparation stages' commands (in the repository, where the
    prepared data is missing: the data is the repository's), then the run and report stages' commands (in
    the workspace): those of dvc.yaml, the launcher resolved, without DVC, so nothing is locked or cached."""
    import yaml

    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    params = yaml.safe_load((workspace / "params.yaml").read_text()) or {}
    launcher = str(params.get("launcher") or "python")
    runs = sorted(
        s for s in stages if s.startswith(f"run-{paper}-") and (dataset is None or s.endswith(f"-{dataset}"))
    )
    prepared = sorted(
        {str(d) for s in runs for d in stages[s].get("deps", []) if str(d).startswith("data/prepared/")}
    )
    prepare = [(root, f"prepare-{Path(d).name}") for d in prepared if not (root / d).exists()]
    report = [] if dataset else [(workspace, f"report-{paper}")]
    commands = []
    for where, stage in [*prepare, *((workspace, s) for s in runs), *report]:
        command = stages[stage]["cmd"].replace("${launcher}", launcher).split()
        commands.append((where, [sys.executable if command[0] == "python" else command[0], *command[1:]]))
    return commands


def run_try(
    paper: str,
    dataset: str | None,
    profile: str,
    sets: Sequence[str],
    dry: bool = False,
    root: Path = Path("."),
) -> Path:
    """Run a try (see ``prepare_try``; ``dry``: only print its commands) and say where its records, report and
    MLflow store are."""
    import shlex

    workspace = prepare_try(paper, profile, sets, root)
    env = stage_env()  # a store of the try's own, even where MLFLOW_TRACKING_URI names a team's server
    env["MLFLOW_TRACKING_URI"] = try_store(workspace)
    # the runs' root (their MLflow artifacts): the try's, not git's top level
    env["DVC_ROOT"] = str(workspace.resolve())
    print(
        f"repro: a try in {workspace} (profile {profile}{''.join(f', {s}' for s in sets)}); "
        "the repository's records, reports and params.yaml stay as they are",
        flush=True,
    )
    for where, command in try_commands(paper, dataset, workspace, root):
        shown = shlex.join(["python" if c == sys.executable else c for c in command])
        print(f"repro: ({where}) {shown}", flush=True)
        if not dry:
            _pass_through(command, env, shown, f"(in {where}) its messages are above", cwd=where)
    report = workspace / "reports" / f"{paper}.md"
    name = workspace.name
    print(
        f"repro: the try's report: {report} (`repro show {paper} --try {name}`); its runs: "
        f"`repro ui --try {name}`",
        flush=True,
    )
    return workspace


def reproduce(command: Sequence[str]) -> None:
    """Run the DVC command with this venv first on PATH; its output (and the runs' progress bars) pass through."""
    shown = " ".join(["dvc", *command[1:]])
    print(f"repro: {shown}", flush=True)
    _pass_through(command, stage_env(), shown, "DVC's messages are above")


def _pass_through(
    command: Sequence[str], env: dict[str, str], shown: str, whose: str, cwd: Path | None = None
) -> None:
    """Run ``command``, its output passing through; Ctrl-C in it is Ctrl-C here, a failure an error naming it."""
    returncode = subprocess.run(list(command), cwd=cwd, env=env).returncode
    if returncode == 130 or returncode == -signal.SIGINT:
        raise KeyboardInterrupt
    if returncode != 0:
        raise ConfigError(f"`{shown}` failed with exit status {returncode}; {whose}")


# --------------------------------------------------------------------------------------------
# repro show PAPER
# --------------------------------------------------------------------------------------------


def _sections(markdown: str) -> list[tuple[str, list[str]]]:
    """(heading, lines under it) for every ``#``-heading of a markdown text, in order."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in markdown.splitlines():
        if line.startswith("#"):
            sections.append((line, []))
        else:
            sections[-1][1].append(line)
    return sections


def _cells(line: str) -> list[str]:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return [re.sub(r"\*\*|`", "", c) for c in cells]


def _table(lines: Sequence[str]) -> list[list[str]]:
    """The first markdown table in ``lines``: header and rows (the ``|---|`` line dropped)."""
    rows = [_cells(line) for line in lines if line.startswith("|")]
    return [row for row in rows if not all(set(c) <= set("-: ") for c in row)]


def render_table(rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """Columns aligned; a table wider than ``width`` is cut into several, each repeating the first column."""
    if not rows:
        return []
    n = max(len(r) for r in rows)
    rows = [list(r) + [""] * (n - len(r)) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    groups: list[list[int]] = [[]]
    used = widths[0]
    for i in range(1, n):
        if groups[-1] and used + 2 + widths[i] > width:
            groups.append([])
            used = widths[0]
        groups[-1].append(i)
        used += 2 + widths[i]
    out: list[str] = []
    for k, group in enumerate(groups):
        if k:
            out.append("")
        columns = [0, *group]
        for j, row in enumerate(rows):
            out.append("  ".join(row[i].ljust(widths[i]) for i in columns).rstrip())
            if j == 0:
                out.append("  ".join("-" * widths[i] for i in columns))
    return out


def show_report(
    paper: str,
    reports_root: Path = Path("reports"),
    width: int | None = None,
    runs: bool = False,
    claims: bool = True,
) -> str:
    """The report's results tables (and claim verdicts) as aligned text, from ``reports/PAPER.md``."""
    from common.paper import load_paper

    meta = load_paper(paper)
    path = reports_root / f"{paper}.md"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist yet: build it with `repro reproduce {paper}`")
    width = width or shutil.get_terminal_size((120, 24)).columns
    summary_path = reports_root / f"{paper}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    lines = [meta.title, f"{meta.authors}, {meta.venue}"]
    if summary:
        lines.append(f"profile {summary['profile']}, seeds {summary['seeds']}; the full report: {path}")
    in_results = False
    for heading, body in _sections(path.read_text()):
        if heading.startswith("## "):
            in_results = heading == "## Results"
            if in_results:
                text = next((b for b in body if b.strip()), "")
                lines += ["", text.split(". ")[0] + "." if text else ""]
        elif heading.startswith("### ") and in_results:
            table = _table(body)
            if table and not runs and table[0][-1] == "MLflow runs":
                table = [row[:-1] for row in table]
            lines += ["", heading.removeprefix("### "), ""]
            lines += render_table(table, width)
    if claims and summary.get("claims"):
        lines += [
            "",
            "Claims (verdict from the paired per-seed difference, positive in the claimed direction, against the "
            "claim's margin; in points)",
            "",
        ]
        lines += render_table(_claims_table(summary["claims"]), width)
        texts = {c["claim"]: c["text"] for c in summary["claims"] if "text" in c}
        lines += ["", *(f"  {key}: {text}" for key, text in texts.items())]
    return "\n".join(lines)


def _claims_table(claims: Sequence[dict]) -> list[list[str]]:
    from common.report.stats import format_interval, format_margin

    rows = [["claim", "of", "dataset", "metric", "better", "worse", "difference", "margin", "verdict"]]
    for c in claims:
        of = "paper" if c.get("source", "paper") == "paper" else "ours"
        if "difference" not in c:
            rows.append(
                [c["claim"], of, c["dataset"], "", "", "", "", "", f"{c['verdict']} ({c.get('why', '')})"]
            )
            continue
        cells = [format_interval(c["metric"], c[k]) for k in ("better", "worse", "difference")]
        needed = c.get("seeds_needed")
        verdict = c["verdict"] + (
            f" ({needed} seeds for 80% power)" if c["verdict"] == "inconclusive" and needed else ""
        )
        rows.append(
            [
                c["claim"],
                of,
                c["dataset"],
                c["metric"],
                *cells,
                format_margin(c["metric"], c["margin"]),
                verdict,
            ]
        )
    return rows


# --------------------------------------------------------------------------------------------
# repro papers: the status column
# --------------------------------------------------------------------------------------------


STATUS_CACHE = Path(".dvc") / "tmp" / "repro-papers-status.json"


def _status_key(repo: Path = Path(".")) -> str:
    """A hash of what ``dvc status`` reads: the pipeline files and the size and modification time of every
    dependency and output they name (the files under a named folder included)."""
    import hashlib

    import yaml

    digest = hashlib.sha256()
    paths: set[str] = set()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        path = repo / name
        content = path.read_bytes() if path.is_file() else b""
        digest.update(name.encode() + b"\0" + content + b"\0")
        if name != "params.yaml" and content:
            for stage in (yaml.load(content, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {})[
                "stages"
            ].values():
                # dvc.yaml: a path, or {path: {cache: ...}}; dvc.lock: {path: ..., md5: ...}
                for entry in [*stage.get("deps", []), *stage.get("outs", [])]:
                    if isinstance(entry, dict):
                        entry = entry["path"] if "path" in entry else next(iter(entry))
                    paths.add(str(entry))
    for rel in sorted(paths):
        target = repo / rel
        files = sorted(target.rglob("*")) if target.is_dir() else [target]
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                digest.update(f"{path}\0missing\n".encode())
                continue
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def paper_status(slugs: Sequence[str]) -> dict[str, str]:
    """Per paper: ``current``, or ``stale: <stages>`` from ``dvc status`` (read as ``check-reports`` reads it).

    ``dvc status`` takes seconds; its answer is kept in ``.dvc/tmp`` and reused while no file it reads has
    changed (by size and modification time), so a second call answers at once.
    """
    from common.errors import StorageError
    from common.records import write_atomically
    from common.staleness import stale_stages

    key = _status_key()
    try:
        cached = json.loads(STATUS_CACHE.read_text())
        stale = cached["stale"] if cached.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        stale = None
    if stale is None:
        try:
            stale = stale_stages(dvc=executable("dvc"))
        except (subprocess.CalledProcessError, OSError, ValueError) as err:
            reason = err.stderr.strip().splitlines()[-1] if getattr(err, "stderr", None) else str(err)
            return dict.fromkeys(slugs, f"unknown ({reason[:80]})")
        with contextlib.suppress(StorageError, OSError):  # a cache: a refused write costs only time
            write_atomically(STATUS_CACHE, json.dumps({"key": key, "stale": stale}), "the status cache")
    result = {}
    for slug in slugs:
        mine = sorted(s for s in stale if s == f"report-{slug}" or s.startswith(f"run-{slug}-"))
        result[slug] = f"stale: {', '.join(mine)}" if mine else "current"
    prepare = sorted(s for s in stale if s.startswith("prepare-"))
    if prepare:
        result[""] = f"stale data preparation: {', '.join(prepare)} (every paper on that dataset reruns)"
    return result


VERDICT_ORDER = ("reproduced", "reversed", "no effect", "inconclusive")


def verdict_counts(claims: Sequence[dict], source: str) -> str:
    """``reproduced/reversed/no effect/inconclusive`` counts of one source's checks (``-`` if none)."""
    verdicts = [c["verdict"] for c in claims if c.get("source", "paper") == source]
    if not verdicts:
        return "-"
    return "/".join(str(verdicts.count(v)) for v in VERDICT_ORDER)


def papers_table(slugs: Sequence[str], status: dict[str, str] | None, width: int) -> list[str]:
    """``repro papers``: one row per paper (verdict counts, report status, title and venue cut to fit
    ``width``), then the stale stages of each paper that has any."""
    import textwrap

    from common.paper import load_paper

    rows = [["paper", "paper's claims", "our checks", *(["report"] if status is not None else [])]]
    notes, titles = [], []
    for slug in slugs:
        meta = load_paper(slug)
        summary = Path("reports") / f"{slug}.json"
        claims = json.loads(summary.read_text())["claims"] if summary.is_file() else None
        row = [slug, "no report yet", ""]
        if claims is not None:
            row = [slug, verdict_counts(claims, "paper"), verdict_counts(claims, "ours")]
        if status is not None:
            state = status[slug] if claims is not None else "-"
            stages = state.removeprefix("stale: ").split(", ")
            row.append(f"stale ({len(stages)})" if state.startswith("stale: ") else state)
            if state.startswith("stale: "):
                notes += textwrap.wrap(
                    f"{slug}: stale: {', '.join(stages)}",
                    width,
                    subsequent_indent="    ",
                    break_on_hyphens=False,
                )
        rows.append(row)
        titles.append(f"{meta.title} ({meta.venue})")
    room = max(width - sum(max(len(r[i]) + 2 for r in rows) for i in range(len(rows[0]))), 12)
    rows[0].append("title")
    for row, title in zip(rows[1:], titles, strict=True):
        row.append(title if len(title) <= room else title[: room - 3].rstrip() + "...")
    lines = render_table(rows, width=10_000)
    lines += ["", "Counts: reproduced/reversed/no effect/inconclusive."]
    if notes:
        lines += ["", *notes]
    if status is not None and status.get(""):
        lines += textwrap.wrap(status[""], width, subsequent_indent="    ")
    return lines


# --------------------------------------------------------------------------------------------
# repro readme
# --------------------------------------------------------------------------------------------

README_BEGIN = "<!-- papers:begin (generated by `repro readme` from papers/*/paper.yaml: do not edit) -->"
README_END = "<!-- papers:end -->"


def cited_authors(authors: str) -> str:
    """The surnames of a paper's authors as a citation gives them: ``Wang`` for one, ``Wang & Isola`` for two,
    ``Wang et al.`` for three or more (the surname is the last word of each comma-separated name)."""
    surnames = [name.split()[-1] for name in authors.split(",") if name.strip()]
    return f"{surnames[0]} et al." if len(surnames) > 2 else " & ".join(surnames)


def readme_papers_table(params_path: Path = Path("params.yaml")) -> list[str]:
    """The README's table of the papers: one row per ``papers/*/paper.yaml`` (authors, title, venue) with its
    report, in the order of the papers' sections in ``params_path`` (the order they were added), then any
    paper without a section, by slug."""
    import yaml

    from common.paper import load_paper
    from common.params import all_papers

    sections = list(yaml.safe_load(params_path.read_text()) or {})
    slugs = all_papers()
    ordered = [s for s in sections if s in slugs] + sorted(set(slugs) - set(sections))
    rows = ["| paper | report |", "|---|---|"]
    for slug in ordered:
        meta = load_paper(slug)
        cited = f"{cited_authors(meta.authors)}, {meta.title} ({meta.venue})".replace("|", "\\|")
        rows.append(f"| {cited} | [reports/{slug}.md](reports/{slug}.md) |")
    return rows


def render_readme(text: str, table: Sequence[str], where: str = "README.md") -> str:
    """``text`` with the lines between the ``README_BEGIN`` and ``README_END`` lines replaced by ``table``."""
    lines = text.split("\n")
    begins = [i for i, line in enumerate(lines) if line.strip() == README_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == README_END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ConfigError(
            f"{where}: expected one line {README_BEGIN!r} and, below it, one line {README_END!r} around the "
            f"papers table; found {len(begins)} and {len(ends)}"
        )
    return "\n".join([*lines[: begins[0] + 1], "", *table, "", *lines[ends[0] :]])


# --------------------------------------------------------------------------------------------
# repro ui
# --------------------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {err.strerror or err} (another `repro ui` or `mlflow ui`?); "
                "choose another port with --port"
            ) from err


def try_workspace(name: str, root: Path = Path(".")) -> Path:
    """The workspace of the try ``name`` (a folder of tries/); an error listing the tries if there is none."""
    workspace = root / TRIES / name
    if not workspace.is_dir():
        tries = sorted(p.name for p in (root / TRIES).iterdir()) if (root / TRIES).is_dir() else []
        raise ConfigError(
            f"no try {name!r} in {root / TRIES}: its tries: {', '.join(tries) or 'none yet'} "
            "(`repro reproduce PAPER --profile smoke` makes one)"
        )
    return workspace


def ui_store(try_name: str | None = None) -> str:
    """The store ``mlflow ui`` should show: the one the runs are logged to (a try's own, for a try); an error
    if it does not exist."""
    from common.tracking.mlflow_tracking import absent_sqlite_store, tracking_uri

    uri = try_store(try_workspace(try_name)) if try_name else tracking_uri()
    database = absent_sqlite_store(uri)
    if database is not None:
        raise ConfigError(
            f"no MLflow store at {database}: the runs are logged there when a paper's stages run "
            "(`repro reproduce PAPER`); set MLFLOW_TRACKING_URI if they went elsewhere"
        )
    return uri


def experiment_links(base: str) -> list[str]:
    """``name: URL`` of every experiment the server at ``base`` holds (one line each)."""
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1000}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            experiments = json.load(response).get("experiments", [])
    except (OSError, ValueError):
        return []
    return [
        f"  {e['name']}: {base}/#/experiments/{e['experiment_id']}"
        for e in sorted(experiments, key=lambda e: e["name"])
        if e["name"] != "Default"
    ]


# --------------------------------------------------------------------------------------------
# repro compare PAPER: the methods side by side across seeds, from the MLflow store
# --------------------------------------------------------------------------------------------


def compare_runs(
    paper: str,
    profile: str,
    metrics: Sequence[str] = (),
    dataset: str | None = None,
    uri: str | None = None,
    width: int = 100,
) -> list[str]:
    """Mean, standard deviation and n over seeds of each (dataset, method) of the paper's finished runs of
    ``profile`` in the MLflow store (the latest run of each seed; tuning trials left out), for ``metrics``
    (default: those the paper's claims read)."""
    import statistics

    from mlflow.tracking import MlflowClient

    from common.paper import load_paper
    from common.tracking.mlflow_tracking import tracking_uri

    meta = load_paper(paper)
    metrics = list(metrics) or sorted({c.metric for c in meta.claims})
    client = MlflowClient(uri or tracking_uri())
    experiment = client.get_experiment_by_name(paper)
    if experiment is None:
        raise ConfigError(
            f"the MLflow store {client.tracking_uri} has no experiment {paper!r}: run its stages first"
        )
    latest: dict[tuple[str, str, str], Any] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.status = 'FINISHED' and tags.profile = '{profile}'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            if "tuning_point" in tags or (dataset and tags.get("dataset") != dataset):
                continue
            key = (tags.get("dataset", "?"), tags.get("method", "?"), tags.get("seed", "?"))
            if key not in latest or run.info.start_time > latest[key].info.start_time:
                latest[key] = run
        token = page.token
        if not token:
            break
    if not latest:
        raise ConfigError(f"no finished {profile} runs of {paper} in {client.tracking_uri}")
    groups: dict[tuple[str, str], list[Any]] = {}
    for (ds, method, _), run in sorted(latest.items()):
        groups.setdefault((ds, method), []).append(run)
    rows = [["dataset", "method", "n", *metrics]]
    for (ds, method), runs in groups.items():
        cells = []
        for metric in metrics:
            values = [r.data.metrics[metric] for r in runs if metric in r.data.metrics]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f}" if values else "-")
        rows.append([ds, method, str(len(runs)), *cells])
    title = f"{paper}: finished {profile} runs in {client.tracking_uri}, mean ± standard deviation over seeds"
    return [title, *render_table(rows, width)]


RUN_PROCESSES = (b"common.runner", b"certify")


def runner_alive(proc: Path = Path("/proc")) -> bool:
    """Whether a run stage (``common.runner``) or a certification runs on this machine. True where it
    cannot tell (no ``/proc``), so that nothing live is ever taken for dead."""
    if not proc.is_dir():
        return True
    me = str(os.getpid())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == me:
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(name in arguments for name in RUN_PROCESSES):
            return True
    return False


def close_abandoned_runs(uri: str) -> int:
    """Mark ``KILLED`` the runs a local store still shows ``RUNNING`` when no run stage runs on this machine
    (their process was killed: SIGKILL, a closed terminal, power loss); the number marked. A team server's
    runs may be live on other machines: they are left alone."""
    if not uri.startswith("sqlite:") or runner_alive():
        return 0
    from mlflow.tracking import MlflowClient

    from common.tracking import mark_abandoned

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return 0
    running = client.search_runs(
        experiments, filter_string="attributes.status = 'RUNNING'", max_results=10_000
    )
    return sum(mark_abandoned(run.info.run_id) for run in running)


@contextlib.contextmanager
def _stopped_on_exit(process: subprocess.Popen) -> Iterator[None]:
    """Stop the server however we leave: Ctrl-C reaches it with us (it shares our process group), a SIGTERM
    to us is passed on (``mlflow ui`` forwards both to the uvicorn server it starts)."""

    terminated = []

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        # after Ctrl-C the server got the SIGINT too and is stopping: give it time; else ask it to
        steps = (
            (None, process.terminate, process.kill) if not terminated else (process.terminate, process.kill)
        )
        for stop in steps:
            if process.poll() is not None:
                break
            if stop is not None:
                stop()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
        process.wait()


def serve_ui(
    host: str,
    port: int,
    open_browser: bool = False,
    start_timeout_s: float = 180.0,
    try_name: str | None = None,
) -> None:
    """Start ``mlflow ui`` on the runs' store (a try's), print its address once it answers, serve until Ctrl-C."""
    from common.tracking.provenance import repo_root

    uri = ui_store(try_name)
    if uri.startswith(("http://", "https://")):
        print(f"the runs are logged to the MLflow server {uri}: open it in a browser")
        return
    _check_port(host, port)
    closed = close_abandoned_runs(uri)
    if closed:
        print(
            f"marked {closed} run(s) KILLED: MLflow showed them running, but no run stage runs on this machine"
        )
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    command = [executable("mlflow"), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    command += ["--workers", "1"]
    print(f"starting mlflow ui on {base} (store {uri}) ...", flush=True)
    process = subprocess.Popen(command, cwd=repo_root())
    with _stopped_on_exit(process):
        deadline = time.monotonic() + start_timeout_s
        while not _answers(f"{base}/health"):
            if process.poll() is not None:
                raise ConfigError(
                    f"mlflow ui exited with status {process.returncode}; its messages are above"
                )
            if time.monotonic() > deadline:
                raise ConfigError(f"mlflow ui did not answer on {base} within {start_timeout_s:.0f} s")
            time.sleep(0.5)
        print(f"MLflow UI: {base}", *experiment_links(base), "Ctrl-C stops it.", sep="\n", flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(base)
        try:
            process.wait()
        except KeyboardInterrupt:
            print("stopping mlflow ui", file=sys.stderr)
            return
    if process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise ConfigError(f"mlflow ui stopped with status {process.returncode}; its messages are above")
