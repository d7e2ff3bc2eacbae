"""The MLflow UI, in a real browser, on the store that the smoke `dvc repro` filled.

`repro ui` starts `mlflow ui` on a free loopback port of the smoke repository (tests/e2e/conftest.py), and
headless Chromium (Debian's `chromium`, driven by Playwright) checks what a user sees there:

- the paper's experiment, with one run per method x dataset x seed of the smoke profile, each by name;
- the comparison view of all of them: every param and every final metric of each run, in its run's column,
  equal to the run records (`records/<paper>/<dataset>/<method>/seed<k>.json`) to the precision shown;
- on a run's page: the tags that name the git commit and the DVC stage;
- its artifacts: the run record, and the paper's report and figures (attached by the report stage),
  with a figure that loads;
- its per-epoch training curves (one point per epoch).

Screenshots go to the test's temporary directory (their paths are printed), and also to the folder named by
``REPRO_UI_SCREENSHOTS`` if set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from common.tracking.mirror import record_params
from tests.e2e.conftest import BIN, DATASETS, METHODS, PAPER_PARAMS, git

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
PAPER = "multi_similarity"
# no traffic of its own: the machine may have no network, and a test must not depend on one
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 90_000  # the UI is a large React app; on 2 busy cores a page can take tens of seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def ui(smoke_repo):
    """``repro ui`` on the smoke store: yields its base URL; then Ctrl-C, which must stop the server."""
    repo, env, _ = smoke_repo
    env = {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log = tempfile.TemporaryFile(mode="w+")
    port = _free_port()
    # a process group of its own, as a terminal gives a command: Ctrl-C goes to the whole group
    server = subprocess.Popen(
        [str(BIN / "python"), "-m", "common.cli", "ui", "--port", str(port)],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            log.seek(0)
            output = log.read()
            if "Ctrl-C stops it." in output:
                break
            assert server.poll() is None, f"repro ui exited with {server.returncode}:\n{output[-3000:]}"
            assert time.monotonic() < deadline, f"repro ui did not get ready:\n{output[-3000:]}"
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        assert f"MLflow UI: {base}" in output
        assert re.search(rf"{PAPER}: {re.escape(base)}/#/experiments/\d+", output), output
        yield base
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        assert server.wait(timeout=60) == 0, "repro ui ends cleanly on Ctrl-C"
        assert not _listening(port), "the server stopped with it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # whatever is left of the group
        server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver (make system-packages)"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture()
def page(browser):
    page = browser.new_page()
    yield page
    page.close()


def _shoot(page, tmp_path: Path, name: str, scroll_to: str | None = None) -> Path:
    close = page.get_by_role(
        "button", name="Close", exact=True
    )  # MLflow's chat side panel: not in the picture
    if close.count() and close.first.is_visible():
        close.first.click()
        page.wait_for_timeout(500)
    if scroll_to:
        page.get_by_text(scroll_to, exact=True).first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    if os.environ.get("REPRO_UI_SCREENSHOTS"):
        target = Path(os.environ["REPRO_UI_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
        print(f"screenshot: {target / path.name}")
    return path


def _records(repo: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((repo / "records" / PAPER).glob("*/*/seed*.json"))]


def _experiment_id(base: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(base).get_experiment_by_name(PAPER).experiment_id


def _squash(text: str) -> str:
    """A param as shown (JSON lists are pretty-printed over lines) against the logged string."""
    return re.sub(r"\s+", "", text)


def _shown_equals(shown: str, value: float) -> bool:
    """A metric as the UI rounds it (3 decimals, trailing zeros dropped, or exponent form) against the value."""
    number = float(shown)
    if "e" in shown.lower():
        mantissa = shown.lower().split("e")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return (
            abs(number - value) <= 0.5 * 10 ** (-decimals) * 10 ** int(shown.lower().split("e")[1]) * 1.0001
        )
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(number - value) <= 0.5 * 10 ** (-decimals) + 1e-12


def test_the_experiment_lists_one_run_per_method_dataset_and_seed(smoke_repo, ui, page, tmp_path):
    repo, _, _ = smoke_repo
    seeds = PAPER_PARAMS["profiles"]["smoke"]["seeds"]
    expected = {f"{m}/{d}/seed{s}" for m in METHODS for d in DATASETS for s in seeds}
    page.goto(f"{ui}/#/experiments")
    page.get_by_text("Model training", exact=True).click()  # MLflow 3 opens on its GenAI side
    page.get_by_role("link", name=PAPER, exact=True).first.click()  # as a user: the experiment by name
    page.get_by_text(f"{len(expected)} matching runs").wait_for()
    for name in sorted(expected):
        page.get_by_role("link", name=name, exact=True).first.wait_for()
    _shoot(page, tmp_path, "experiment_runs")
    assert len(_records(repo)) == len(expected)


def _compare_cells(page) -> dict:
    """Run ids (column order), the params table, and the metric grid as name -> [value per column]."""
    return page.evaluate(
        """() => {
        const box = e => { const r = e.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; };
        const tables = [...document.querySelectorAll('table')];
        const header = tables.find(t => t.rows.length && t.rows[0].innerText.startsWith('Run ID'));
        const runs = [...header.rows[0].querySelectorAll('a')].map(a => ({id: a.innerText.trim(), ...box(a)}));
        const tableRows = tables.filter(t => t !== header).map(t => [...t.rows].map(r => [...r.cells].map(c => c.innerText)));
        const grids = [...document.querySelectorAll('[role=grid]')];
        const cells = g => [...g.querySelectorAll('[role=rowgroup] > div')].map(c => ({text: c.innerText.trim(), ...box(c)}));
        return {runs, tables: tableRows, grids: grids.map(cells)};
    }"""
    )


def _open_comparison(page, ui: str, run_ids: list[str]) -> dict:
    ids = json.dumps(run_ids, separators=(",", ":"))
    page.goto(f'{ui}/#/compare-runs?runs={ids}&experiments=["{_experiment_id(ui)}"]')
    page.get_by_text(f"Comparing {len(run_ids)} Runs from 1 Experiment").wait_for()
    page.locator("[role=grid]").nth(1).wait_for()
    seen = _compare_cells(page)
    assert sorted(run["id"] for run in seen["runs"]) == sorted(run_ids)
    return seen


def _shown_metrics(seen: dict) -> dict[str, dict[str, str]]:
    """run id -> metric -> the value shown in that metric's row and that run's column of the metric grid."""
    names, values = seen["grids"]
    columns = sorted({round(cell["x"]) for cell in values})
    runs = sorted(seen["runs"], key=lambda run: run["x"])
    assert len(columns) == len(runs), "the metric grid shows a column per run"
    shown: dict[str, dict[str, str]] = {run["id"]: {} for run in runs}
    for name in names:
        row = [cell for cell in values if abs(cell["y"] - name["y"]) < 2]
        assert len(row) == len(runs), f"metric {name['text']}: {len(row)} values for {len(runs)} runs"
        for cell in row:
            shown[runs[columns.index(round(cell["x"]))]["id"]][name["text"]] = cell["text"]
    return shown


def test_the_comparison_view_shows_every_param_and_final_metric_of_the_records(
    smoke_repo, ui, page, tmp_path
):
    repo, _, _ = smoke_repo
    records = {r["provenance"]["mlflow_run_id"]: r for r in _records(repo)}
    seen = _open_comparison(page, ui, sorted(records))
    _shoot(page, tmp_path, "compare_runs", scroll_to="Run details")

    # params: every run's flattened config and its components' defaults in its column (a key of another
    # method's loss shows empty)
    columns = [run["id"] for run in seen["runs"]]
    expected_params = {run_id: record_params(record) for run_id, record in records.items()}
    params_table = next(t for t in seen["tables"] if any(row and row[0] == "loss.name" for row in t))
    shown_params = {row[0]: row[1:] for row in params_table}
    assert set(shown_params) == {key for params in expected_params.values() for key in params}
    for key, values in shown_params.items():
        for run_id, value in zip(columns, values, strict=True):
            logged = expected_params[run_id].get(key)
            if logged is None:
                assert value.strip() in ("", "-"), (run_id, key, value)
            else:
                assert _squash(value) == _squash(logged), (run_id, key, value)

    # final metrics: the metric grid draws only the columns in view, so two runs at a time
    checked = 0
    ids = sorted(records)
    for k, pair in enumerate(ids[i : i + 2] for i in range(0, len(ids), 2)):
        shown = _shown_metrics(_open_comparison(page, ui, pair))
        if k == 0:
            _shoot(page, tmp_path, "compare_metrics", scroll_to="Metrics")
        for run_id in pair:
            record = records[run_id]
            final = {**record["metrics"], **record["history"][-1]}  # the last epoch's training metrics too
            # The grid draws the rows in its view (alphabetical; the last ones may be past it): every final
            # metric must be drawn, the last epoch's training metrics are checked where they are.
            assert set(record["metrics"]) <= set(shown[run_id]) <= set(final), run_id
            for name, value in shown[run_id].items():
                assert _shown_equals(value, final[name]), (run_id, name, value, final[name])
                checked += 1
    assert checked >= sum(len(r["metrics"]) for r in records.values())


def _one_run(repo: Path) -> dict:
    return next(r for r in _records(repo) if r["method"] == PAPER and r["dataset"] == "omniglot")


def test_a_run_page_names_the_git_commit_and_dvc_stage(smoke_repo, ui, page, tmp_path):
    repo, _, _ = smoke_repo
    record = _one_run(repo)
    run_id = record["provenance"]["mlflow_run_id"]
    commit = git(repo, "rev-parse", "HEAD").strip()
    page.goto(f"{ui}/#/experiments/{_experiment_id(ui)}/runs/{run_id}")
    page.get_by_text(f"{PAPER}/omniglot/seed0").first.wait_for()
    page.get_by_text(commit).first.wait_for()
    text = page.inner_text("body")
    assert re.search(rf"git_commit\s*:\s*{commit}", text), "the git commit tag"
    assert re.search(r"dvc_stage\s*:\s*run-multi_similarity-omniglot", text), "the DVC stage tag"
    assert re.search(r"git_dirty\s*:\s*False", text)
    assert re.search(rf"params_hash\s*:\s*{record['config_hash']}", text)
    _shoot(page, tmp_path, "run_tags")


def test_a_run_shows_its_record_report_figures_and_per_epoch_curves(smoke_repo, ui, page, tmp_path):
    repo, _, _ = smoke_repo
    record = _one_run(repo)
    run_id = record["provenance"]["mlflow_run_id"]
    run_url = f"{ui}/#/experiments/{_experiment_id(ui)}/runs/{run_id}"

    page.goto(f"{run_url}/artifacts")
    # within the artifact tree: the experiment's name is also in the page header and the side bar, and a
    # folder's children load after its click, so an unscoped `.last` can resolve to the header's link
    tree = page.get_by_test_id("artifact-tree-node")
    tree.get_by_text("record", exact=True).click()
    tree.get_by_text("seed0.json", exact=True).click()
    page.get_by_text(run_id).first.wait_for()  # the record's preview holds the run's own id

    tree.get_by_text("report", exact=True).click()
    tree.get_by_text(f"{PAPER}.md", exact=True).wait_for()
    tree.get_by_text("figures", exact=True).click()
    tree.get_by_text(PAPER, exact=True).click()  # the folder under figures/, as in reports/
    for figure in ("recall_at_k.png", "similarities.png", "training_loss.png"):
        tree.get_by_text(figure, exact=True).wait_for()
    tree.get_by_text("training_loss.png", exact=True).click()
    image = page.get_by_alt_text(f"report/figures/{PAPER}/training_loss.png").first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    figure = (repo / "reports" / "figures" / PAPER / "training_loss.png").read_bytes()
    width = int.from_bytes(figure[16:20], "big")  # the PNG header's width
    assert image.evaluate("img => img.naturalWidth") == width, "the report's own figure"
    _shoot(page, tmp_path, "run_artifacts")

    page.goto(f"{run_url}/model-metrics")
    page.get_by_placeholder("Search metric charts").fill("train_loss")
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for()
    epochs = len(record["history"])
    page.wait_for_function(
        f"() => document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length >= {epochs}"
    )
    assert page.locator(".js-plotly-plot .scatterlayer .point").count() == epochs, "one point per epoch"
    _shoot(page, tmp_path, "run_training_loss")
