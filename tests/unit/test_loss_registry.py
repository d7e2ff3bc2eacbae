"""Walk the loss registry: it finds every loss that common/losses/*.py registers, and every loss builds with
the paper's defaults, cites its paper, and has tests."""

import inspect
import json
import re
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
# Every loss, as the sources register it: the `@LOSSES.register("NAME")` decorators of common/losses/*.py,
# found by a regex, not by the registry's imports, so that a loss the registry fails to find still shows here
# (and a new loss module needs no edit of this test).
DECORATOR = re.compile(r"""^@LOSSES\.register\(\s*["']([^"']*)["']\s*\)""", re.MULTILINE)
SOURCES = {
    p.stem: DECORATOR.findall(p.read_text()) for p in sorted((REPO / "common" / "losses").glob("*.py"))
}
NAMES = {name for names in SOURCES.values() for name in names}


def _build(name: str):
    required = {k for k, v in LOSSES.accepted_params(name).items() if v is inspect.Parameter.empty}
    return build(name, **{k: v for k, v in CONTEXT.items() if k in required})


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_loss_builds_cites_its_paper_and_is_tested(name):
    loss = _build(name)
    assert isinstance(loss, torch.nn.Module)
    doc = type(loss).__doc__ or ""
    assert any(str(year) in doc for year in range(1990, 2030)), f"{name}: the docstring cites no paper"
    tested = [p.name for p in TESTS.glob("test_losses*.py") if f'"{name}"' in p.read_text()]
    assert tested, f"loss {name!r} is registered but no tests/unit/test_losses*.py names it"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_loss_rejects_an_unknown_hyperparameter_listing_what_it_accepts(name):
    with pytest.raises(BuildError, match=f"loss {name!r} does not accept 'not_a_param'; accepted: "):
        build(name, not_a_param=1)


def test_a_missing_required_argument_lists_what_is_accepted():
    with pytest.raises(
        BuildError, match=r"loss 'arcface' needs num_classes, embedding_dim; accepted: num_classes, "
    ):
        build("arcface")


def test_the_scan_finds_every_decorator_of_the_sources():
    assert {"contrastive", "multi_similarity", "cross_entropy"} <= NAMES, (
        f"the scan found only {sorted(NAMES)}"
    )
    for stem, names in SOURCES.items():
        written = (REPO / "common" / "losses" / f"{stem}.py").read_text().count("LOSSES.register(")
        assert written == len(names), (
            f"common/losses/{stem}.py: {written} LOSSES.register( calls, the scan reads {len(names)}; write each "
            'as a decorator on its own line: @LOSSES.register("NAME")'
        )


@pytest.mark.parametrize("stem", sorted(SOURCES))
def test_a_loss_module_registers_one_loss_under_its_file_name(stem):
    """The registry finds a name in the module of that name; a module registering another name is lost."""
    assert SOURCES[stem] in ([], [stem]), (
        f"common/losses/{stem}.py registers {SOURCES[stem]}; expected at most one loss, named {stem!r} "
        "after its file (the registry imports common/losses/NAME.py to find NAME)"
    )


def test_names_lists_every_loss_the_sources_register():
    """In a fresh interpreter, where no test has imported a loss module yet."""
    code = "import json\nfrom common.losses import LOSSES\nprint(json.dumps(LOSSES.names()))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(listed) == len(set(listed))
    missing, extra = sorted(NAMES - set(listed)), sorted(set(listed) - NAMES)
    assert not missing and not extra, (
        f"LOSSES.names() misses {missing} and lists {extra} beyond what common/losses/*.py register"
    )


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
