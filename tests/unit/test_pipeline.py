"""dvc.yaml lists, for every stage, exactly the project code the stage imports (common/pipeline.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from common.pipeline import import_closure, render_dvc_yaml, run_entry, stages
from tests.conftest import REPO

PARAMS = REPO / "params.yaml"


def test_the_committed_dvc_yaml_is_what_the_pipeline_module_writes():
    assert (REPO / "dvc.yaml").read_text() == render_dvc_yaml(PARAMS), (
        "run `repro dvc-yaml` and commit dvc.yaml"
    )


def _code_deps(stage: dict) -> set[str]:
    return {d for d in stage["deps"] if d.endswith(".py")}


RUN_STAGES = [s for s in stages(PARAMS) if s.name.startswith("run-")]

# What the runner really imports when it resolves, checks and builds every run of every profile of one stage.
# One interpreter imports what every stage imports, then forks a child per stage, all at once (a fresh
# interpreter per stage cost 5 s each): each child resolves its stage's runs and writes the project files in
# its sys.modules to a file named after the stage.
_IMPORTS_BY_STAGE = """
import importlib, json, os, sys
from pathlib import Path
import torch
from common import losses, models, optim, samplers
from common.config import engine_loss_kwargs, load_paper_section, resolve_runs
from common.engine.evaluation import optional_modules
import common.runner

def imports_of(paper, dataset):
    for profile in load_paper_section(paper, "params.yaml").profiles:
        for run in resolve_runs(paper, "params.yaml", profile):
            if run.dataset != dataset:
                continue
            model = models.build(run.model.name, **run.model.kwargs)
            extra = engine_loss_kwargs(run, model, class_counts=[3, 2, 1])
            criterion = losses.build(run.loss.name, **run.loss.kwargs, **extra)
            optim.build(run.optimizer.name, list(model.parameters()), **run.optimizer.kwargs)
            samplers.SAMPLERS.get(run.sampler.name)
            for module in optional_modules(run):
                importlib.import_module(module)
    root = Path.cwd().resolve()
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(root):
            rel = Path(path).resolve().relative_to(root)
            if rel.parts[0] in ("common", "papers"):
                files.add(rel.as_posix())
    return sorted(files)

children = {}
for name, paper, dataset in json.loads(sys.argv[1]):
    child = os.fork()
    if child == 0:
        code = 1
        try:
            Path(sys.argv[2], name).write_text(json.dumps(imports_of(paper, dataset)))
            code = 0
        finally:
            os._exit(code)
    children[child] = name
for child, name in children.items():
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, name
"""


@pytest.fixture(scope="module")
def imports_by_stage(tmp_path_factory) -> dict[str, set[str]]:
    out = tmp_path_factory.mktemp("imports")
    jobs = [(s.name, s.cmd.split()[3], s.cmd.split()[-1]) for s in RUN_STAGES]
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS_BY_STAGE, json.dumps(jobs), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {s.name: set(json.loads((out / s.name).read_text())) for s in RUN_STAGES}


@pytest.mark.parametrize("stage", RUN_STAGES, ids=lambda s: s.name)
def test_a_run_stage_lists_every_module_a_run_imports(stage, imports_by_stage):
    imported, listed = imports_by_stage[stage.name], set(stage.code_deps())
    assert imported <= listed, f"{stage.name}: imported but not in dvc.yaml: {sorted(imported - listed)}"


PREPARE_STAGES = [s for s in stages(PARAMS) if s.name.startswith("prepare-")]


@pytest.mark.parametrize("stage", PREPARE_STAGES, ids=lambda s: s.name)
def test_a_prepare_stage_lists_the_builder_it_loads_by_name(stage):
    """``common.data.prepare`` imports each dataset's builder by its name: the stage must list that file."""
    dataset = stage.cmd.split()[-1]
    probe = (
        "import sys, json; from pathlib import Path; from common.data import prepare; "
        f"prepare.builder({dataset!r}); root = Path.cwd().resolve(); "
        "print(json.dumps(sorted(Path(m.__file__).resolve().relative_to(root).as_posix() "
        "for m in list(sys.modules.values()) if getattr(m, '__file__', None) "
        "and Path(m.__file__).resolve().is_relative_to(root / 'common'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported, listed = set(json.loads(done.stdout)), set(stage.code_deps())
    assert f"common/data/{dataset}.py" in imported
    assert imported <= listed, f"{stage.name}: imported but not in dvc.yaml: {sorted(imported - listed)}"


def test_a_loss_that_no_method_names_is_not_a_dependency():
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    run = _code_deps(deps["run-multi_similarity-omniglot"])
    assert "common/losses/multi_similarity.py" in run
    assert "common/losses/triplet.py" in run
    for unrelated in ("arcface", "ldam", "supcon", "siglip", "prototypical"):
        assert f"common/losses/{unrelated}.py" not in run, unrelated
    assert not any(d.startswith("common/report/") for d in run), "training does not depend on the report code"
    report = _code_deps(deps["report-multi_similarity"])
    assert "common/report/build.py" in report
    assert not any(d.startswith(("common/engine/", "common/losses/multi")) for d in report)


def test_optional_evaluations_are_dependencies_only_where_asked_for():
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    ms = _code_deps(deps["run-multi_similarity-omniglot"])
    arcface = _code_deps(deps["run-arcface-omniglot_noise20"])
    assert "common/metrics/verification.py" in arcface
    assert "common/metrics/verification.py" not in ms
    assert "common/engine/few_shot.py" not in ms | arcface
    assert "papers/arcface/report.py" in _code_deps(deps["report-arcface"])
    assert deps["run-arcface-omniglot_noise20"]["deps"][-1] == "data/prepared/omniglot", (
        "a variant reads its source"
    )


def test_the_closure_follows_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "common"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..late import g\n")
    (pkg / "late.py").write_text("import os\n")
    (pkg / "unused.py").write_text("")
    found = {p.relative_to(tmp_path).as_posix() for p in import_closure(["common.sub"], tmp_path)}
    assert found == {"common/__init__.py", "common/sub/__init__.py", "common/sub/leaf.py", "common/late.py"}


def test_run_entry_names_the_modules_of_the_building_blocks_in_params():
    entry = run_entry("multi_similarity", "omniglot", PARAMS)
    assert entry[0] == "common.runner"
    assert {"common.losses.multi_similarity", "common.losses.contrastive", "common.losses.triplet"} <= set(
        entry
    )
    assert "common.samplers.m_per_class" in entry
