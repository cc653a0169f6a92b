"""The notebooks in notebooks/ run top to bottom on the smoke artifacts, and are committed clean.

The smoke pipeline is built through `submit` once (from the session's cache when another test
module built it already); each notebook then runs in a fresh kernel of this interpreter with its
parameters cell replaced by the smoke config and the overrides pointing at the tmp data and
artifacts. Any cell error fails the test (nbclient raises CellExecutionError)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from pipeline.core import paths
from pipeline.engine import cache
from pipeline.stages import GRAPH

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = ("01_eda.ipynb", "02_oof_analysis.ipynb", "03_postprocessing.ipynb")
SMOKE_CFG = REPO / "configs" / "smoke.yaml"
CELL_TIMEOUT_S = 180


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def smoke_built(smoke_cfg, smoke_overrides, tmp_path_factory) -> list[str]:
    """Every smoke stage through submit; returns the overrides the notebooks get."""
    root = tmp_path_factory.mktemp("notebooks_root")
    with pytest.MonkeyPatch.context() as mp:
        # Submit writes under SUBMISSIONS_DIR and records it relative to REPO_ROOT (see conftest.submissions_dir).
        mp.setattr(paths, "SUBMISSIONS_DIR", root / "submissions")
        mp.setattr(paths, "REPO_ROOT", root)
        cache.run_stage(GRAPH, smoke_cfg(), "submit")
    return smoke_overrides()


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory):
    """A 'python3' kernelspec for this interpreter, first on JUPYTER_PATH, so the notebooks run
    in the venv whatever kernelspecs the machine has; one OpenMP thread in the kernels."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "pipeline venv", "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs_and_parametrised(name):
    nb = _read(name)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", []), f"{name}: first cell must be tagged 'parameters'"
    assert "CONFIG = " in first.source and "OVERRIDES = " in first.source
    for i, cell in enumerate(nb.cells):
        assert "data/artifacts" not in cell.source, f"{name} cell {i}: hard-coded artifact path"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} cell {i}: clear outputs before committing"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_smoke_artifacts(name, smoke_built, venv_kernel):
    nb = _read(name)
    nb.cells[0].source = f"CONFIG = {str(SMOKE_CFG)!r}\nOVERRIDES = {smoke_built!r}"
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
    # Run from notebooks/, as Jupyter would: the notebook must find the repository root itself.
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.prefix, "the notebook did not run in this venv's kernel"
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert figures >= 3, f"{name}: expected at least 3 figures, got {figures}"
