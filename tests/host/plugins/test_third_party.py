"""A third-party package, pip-installed, appears in `harness list` and runs (the README guide)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, run_cli

EXAMPLE = REPO / "examples" / "harness-example-plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pip-install the example package into its own site folder (a temporary environment)."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(EXAMPLE)],
                   check=True, capture_output=True, text=True)
    assert (site / "harness_example_plugin-0.1.0.dist-info" / "entry_points.txt").exists()
    return {"PYTHONPATH": str(site)}


def test_third_party_plugins_are_listed_with_their_distribution(installed_example) -> None:
    result = run_cli("list", "--json", env=installed_example)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    origins = {m["name"]: m["origin"] for m in listing["methods"] + listing["tasks"]}
    assert origins["instructed"] == "harness-example-plugin 0.1.0"
    assert origins["addition"] == "harness-example-plugin 0.1.0"
    assert origins["single"] == "built-in"


def test_third_party_method_and_task_run(installed_example, tmp_path: Path) -> None:
    result = run_cli("run", "--method", "instructed", "--task", "addition,mmlu", "--data",
                     "embedded", "--limit", "2", "-o", "instruction=Be brief.",
                     "--results", str(tmp_path), env=installed_example)
    assert result.returncode == 0, result.stderr
    cells = sorted(p.parent.parent.name for p in (tmp_path / "cells").glob("*/*/*/result.json"))
    assert cells == ["addition", "mmlu"]
    record = json.loads(next((tmp_path / "cells" / "instructed" / "addition").glob("*/result.json"))
                        .read_text())
    assert record["status"] == "ok" and record["row"]["options"] == {"instruction": "Be brief."}


def test_blocking_a_third_party_plugin(installed_example) -> None:
    result = run_cli("-p", "no:example", "list", "--json", env=installed_example)
    names = [m["name"] for m in json.loads(result.stdout)["methods"]]
    assert "instructed" not in names
