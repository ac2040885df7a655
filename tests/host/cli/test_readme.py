"""The README's plugin example is code that runs: extracted from the README and loaded
with `-p`, it lists, plans and computes a cell."""

from __future__ import annotations

import re
from pathlib import Path

from support import REPO, run_cli


def readme_plugin() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- readme-plugin -->\n```python\n(.*?)```", text, re.S)
    assert found, "README.md lost its marked plugin example"
    return found.group(1)


def test_the_readme_plugin_runs(tmp_path: Path) -> None:
    (tmp_path / "readme_plugin.py").write_text(readme_plugin())
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_cli("-p", "readme_plugin", "list", "instructed", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "text put before every prompt" in listed.stdout
    result = run_cli("-p", "readme_plugin", "run", "-m", "instructed", "-t", "addition",
                     "--limit", "3", "--results", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    assert "1 computed" in result.stdout
