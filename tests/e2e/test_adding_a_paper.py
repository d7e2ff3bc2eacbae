"""docs/adding-a-paper.md, followed literally, adds a paper that runs end to end; its worked example is what the
repository holds.

The guide's fenced blocks carry a marker after the language: ``file=PATH`` (write this file), ``append=PATH``
(append to it), ``run`` (run these commands from the repository root), ``excerpt=PATH`` (a part of PATH, as
it is). A temporary copy of the repository on the smoke profile gets the ``file``/``append`` blocks and runs
the ``run`` blocks, in the guide's order, with ``repro`` meaning this checkout's CLI; then the template paper
must have its new loss (registered, tested), its stages, runs, MLflow experiment and report, and its row in the
README's table of the papers.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.e2e.conftest import BIN, local_omniglot, make_smoke_repo, pipeline_env

pytestmark = pytest.mark.e2e

GUIDE = REPO / "docs" / "adding-a-paper.md"
FENCE = re.compile(r"^```(\w*)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SLUG = "my_paper"
LOSS = "binomial_deviance"  # the template paper's new loss


def guide_blocks() -> list[tuple[str, str, str]]:
    """(language, marker, body) of every fenced block of the guide, in order."""
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(GUIDE.read_text())]


def _contained(part: object, whole: object, where: str = "") -> None:
    """``part`` is ``whole`` with some keys and list items left out."""
    if isinstance(part, dict):
        assert isinstance(whole, dict), where
        for key, value in part.items():
            assert key in whole, f"{where}.{key}: not in the repository's file"
            _contained(value, whole[key], f"{where}.{key}")
    elif isinstance(part, list) and part and isinstance(part[0], dict):
        assert isinstance(whole, list), where
        for i, item in enumerate(part):
            ids = [w for w in whole if isinstance(w, dict) and all(w.get(k) == v for k, v in item.items())]
            assert ids, f"{where}[{i}]: no such item in the repository's file"
    else:
        assert part == whole, f"{where}: {part!r} in the guide, {whole!r} in the repository"


def test_every_block_of_the_guide_is_marked():
    markers = [marker for _, marker, _ in guide_blocks()]
    assert markers, "the guide has code blocks"
    for marker in markers:
        assert marker in ("", "run") or re.fullmatch(r"(file|append|excerpt)=\S+", marker), marker
    files = [m.removeprefix("file=") for m in markers if m.startswith("file=")]
    assert files == [
        f"common/losses/{LOSS}.py",
        f"tests/unit/test_losses_{LOSS}.py",
        f"papers/{SLUG}/__init__.py",
        f"papers/{SLUG}/paper.yaml",
    ]
    assert markers.count("append=params.yaml") == 1 and markers.count("run") >= 5


def test_the_worked_example_is_what_the_repository_holds():
    excerpts = [(marker, body) for _, marker, body in guide_blocks() if marker.startswith("excerpt=")]
    assert {m for m, _ in excerpts} == {"excerpt=papers/multi_similarity/paper.yaml", "excerpt=params.yaml"}
    for marker, body in excerpts:
        path = marker.removeprefix("excerpt=")
        _contained(yaml.safe_load(body), yaml.safe_load((REPO / path).read_text()), path)


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    """A smoke copy of the repository after every step of the guide; the output of each ``run`` block."""
    # the cpu profile, as the user's: the guide's smoke run is a try, in tries/smoke
    repo = make_smoke_repo(tmp_path_factory, "new_paper", local_omniglot(fashion_mnist=False), profile="cpu")
    shim = tmp_path_factory.mktemp("bin")
    # `repro` as the README has it (.venv/bin/repro), but this copy's code, as its DVC stages run it
    (shim / "repro").write_text(f'#!/bin/sh\nexec "{BIN / "python"}" -m common.cli "$@"\n')
    (shim / "repro").chmod(0o755)
    env = pipeline_env(shim)

    outputs = []
    for _, marker, body in guide_blocks():
        kind, _, path = marker.partition("=")
        if kind == "file":
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_text(body)
        elif kind == "append":
            with open(repo / path, "a") as f:
                f.write("\n" + body)
        elif kind == "run":
            started = time.perf_counter()
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", body], cwd=repo, env=env, capture_output=True, text=True
            )
            seconds = time.perf_counter() - started
            print(f"{seconds:6.1f} s  {' && '.join(body.strip().splitlines())}")
            assert result.returncode == 0, f"{body}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, result.stderr[-3000:]
            outputs.append((body, result.stdout))
    return repo, env, outputs


def _output(outputs: list[tuple[str, str]], command: str) -> str:
    return next(out for body, out in outputs if command in body)


def test_the_guide_adds_a_loss_that_the_registry_finds_and_its_test_passes(followed):
    repo, _, outputs = followed
    assert (repo / "common" / "losses" / f"{LOSS}.py").is_file()
    body, tested = next((b, out) for b, out in outputs if f"test_losses_{LOSS}.py" in b)
    assert "tests/unit/test_loss_registry.py" in body, "the registry test runs beside the loss's own"
    assert re.search(r"^\d+ passed", tested, re.MULTILINE) and "skipped" not in tested, tested[-1000:]
    listed = _output(outputs, "LOSSES.names()")
    assert "'contrastive'" in listed and LOSS not in listed, (
        "step 1 lists the losses there are, before the new one"
    )


def test_the_guide_adds_a_paper_whose_stages_are_generated(followed):
    repo, env, outputs = followed
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert {f"run-{SLUG}-omniglot", f"report-{SLUG}"} <= set(stages)
    assert f"papers/{SLUG}/__init__.py" in stages[f"run-{SLUG}-omniglot"]["deps"]
    assert f"common/losses/{LOSS}.py" in stages[f"run-{SLUG}-omniglot"]["deps"]
    check = subprocess.run(
        [str(BIN / "python"), "-m", "common.cli", "dvc-yaml", "--check"],
        cwd=repo,
        env=env,
        capture_output=True,
    )
    assert check.returncode == 0
    listed = next(line for line in _output(outputs, "repro papers").splitlines() if line.startswith(SLUG))
    assert "no report yet" in listed and "My Paper: A Better Loss" in listed


def test_the_new_paper_runs_on_smoke_and_gets_its_report(followed):
    root, _, outputs = followed
    repo = root / "tries" / "smoke"  # the smoke run is a try: its records, report and MLflow store
    records = [json.loads(p.read_text()) for p in sorted((repo / "records" / SLUG).glob("*/*/seed*.json"))]
    assert {(r["dataset"], r["method"], r["seed"]) for r in records} == {
        ("omniglot", "proposed", 0),
        ("omniglot", "contrastive", 0),
    }
    assert all(r["config"]["profile"] == "smoke" for r in records)
    assert {r["method"]: r["config"]["loss"]["name"] for r in records} == {
        "proposed": LOSS,
        "contrastive": "contrastive",
    }

    report = (repo / "reports" / f"{SLUG}.md").read_text()
    assert report.startswith("# My Paper: A Better Loss for Metric Learning")
    assert "| Proposed (binomial deviance) |" in report and "| Contrastive |" in report
    assert "| the proposed loss > contrastive loss | paper | omniglot | R@1 |" in report
    assert (
        "figures/my_paper/forest.png" in report and (repo / "reports/figures/my_paper/forest.png").is_file()
    )
    assert "| CUB-200-2011 | Recall@1 (%) | 65.7 |" in report, "the paper's headline number beside ours"
    summary = json.loads((repo / "reports" / f"{SLUG}.json").read_text())
    assert [(c["claim"], c["verdict"]) for c in summary["claims"]] == [
        ("proposed_over_contrastive", "inconclusive")
    ]

    shown = _output(outputs, "repro show")
    assert "Proposed (binomial deviance)" in shown and "proposed_over_contrastive" in shown
    assert _output(outputs, "repro reproduce").startswith("repro: a try in tries/smoke (profile smoke)")

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(SLUG)
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in runs} == {r["provenance"]["mlflow_run_id"] for r in records}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["dvc_stage"] == f"run-{SLUG}-omniglot" for r in runs)


def test_the_guide_left_the_other_papers_alone(followed):
    root, _, _ = followed
    repo = root / "tries" / "smoke"
    assert sorted(p.name for p in (repo / "records").iterdir()) == [SLUG]
    assert not (repo / "reports" / "multi_similarity.md").exists()
    assert (
        not (root / "records").exists()
        and not (root / "reports").exists()
        and not (root / "mlflow.db").exists()
    )


def test_the_readme_lists_the_new_paper_last(followed):
    root, env, outputs = followed
    assert _output(outputs, "repro readme").strip() == "README.md's papers table written"
    table = (root / "README.md").read_text().split("<!-- papers:begin")[1].split("<!-- papers:end -->")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[-1] == (
        "| Author & Author, My Paper: A Better Loss for Metric Learning (Venue 2025) | "
        f"[reports/{SLUG}.md](reports/{SLUG}.md) |"
    )
    assert rows[-2].endswith("(reports/align_uniform.md) |"), "the other papers' rows stay, in their order"
    check = subprocess.run(
        [str(BIN / "python"), "-m", "common.cli", "readme", "--check"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
