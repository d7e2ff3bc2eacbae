"""Walk the loss registry: every loss builds with the paper's defaults, cites its paper, and has tests."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.losses import LOSSES, build
from common.registry import BuildError

# What the engine supplies from the data and the model for losses that need it.
CONTEXT = {"num_classes": 5, "embedding_dim": 8, "class_counts": [50, 20, 10, 5, 2]}
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[1]
# Every registered loss, each in common/losses/<name>.py.
NAMES = {
    "contrastive",
    "triplet",
    "multi_similarity",
    "circle",
    "circle_class",
    "ntxent",
    "supcon",
    "siglip",
    "align_uniform",
    "prototypical",
    "normface",
    "cosface",
    "arcface",
    "subcenter_arcface",
    "cross_entropy",
    "focal",
    "poly1",
    "squentropy",
    "square",
    "ldam",
}


def _build(name: str):
    required = {k for k, v in LOSSES.accepted_params(name).items() if v is inspect.Parameter.empty}
    return build(name, **{k: v for k, v in CONTEXT.items() if k in required})


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_builds_cites_its_paper_and_is_tested(name):
    loss = _build(name)
    assert isinstance(loss, torch.nn.Module)
    doc = type(loss).__doc__ or ""
    assert any(str(year) in doc for year in range(1990, 2030)), f"{name}: the docstring cites no paper"
    tested = [p.name for p in TESTS.glob("test_losses*.py") if f'"{name}"' in p.read_text()]
    assert tested, f"loss {name!r} is registered but no tests/unit/test_losses*.py names it"


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_rejects_an_unknown_hyperparameter_listing_what_it_accepts(name):
    with pytest.raises(BuildError, match=f"loss {name!r} does not accept 'not_a_param'; accepted: "):
        build(name, not_a_param=1)


def test_a_missing_required_argument_lists_what_is_accepted():
    with pytest.raises(
        BuildError, match=r"loss 'arcface' needs num_classes, embedding_dim; accepted: num_classes, "
    ):
        build("arcface")


def test_names_lists_every_loss_of_the_package():
    assert set(LOSSES.names()) == NAMES
    assert len(LOSSES.names()) == len(NAMES)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_loss_is_defined_in_the_module_of_its_name(name):
    assert LOSSES.get(name).__module__ == f"common.losses.{name}"


def test_build_imports_only_the_module_of_the_name():
    code = (
        "import json, sys\n"
        "def loaded(): return sorted(m for m in sys.modules if m.startswith('common.losses.'))\n"
        "import common.losses\n"
        "before = loaded()\n"
        "common.losses.build('circle')\n"
        "print(json.dumps({'before': before, 'after': loaded()}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert modules["before"] == [], "importing common.losses must import no loss module"
    after = set(modules["after"])
    assert "common.losses.circle" in after
    others = {f"common.losses.{name}" for name in NAMES - {"circle"}} | {
        "common.losses.classification",
        "common.losses.margin",
    }
    assert not after & others, f"build('circle') imported {sorted(after & others)}"
