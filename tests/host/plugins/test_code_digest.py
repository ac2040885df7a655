"""A cell's code digest follows the code that can change its numbers: the plugin's own
files and every toolkit it reaches through its imports, `harness.api` included."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

import harness.host as host_module
from harness.host import load_host, source_digest


def _reached(plugin: str) -> set[str]:
    host = load_host()
    spec = host.methods.get(plugin) or host.tasks[plugin]
    entry = spec.build if plugin in host.methods else spec.lm_eval
    path = Path(sys.modules[entry.__module__].__file__ or "")
    return host_module._toolkits_reached(tuple(host_module._source_files(path.parent)))


def test_built_in_plugins_reach_the_toolkits_they_use() -> None:
    assert "harness.fusion" in _reached("packllm") and "harness.fusion" not in _reached("single")
    assert "harness.training" in _reached("lora")  # through harness.api's fit
    assert "harness.isolation" in _reached("humaneval")
    assert "harness.judge" in _reached("vicuna_bench")
    assert _reached("mmlu") == {"harness.data"}


def test_editing_a_toolkit_changes_exactly_the_digests_of_its_users(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kit.py").write_text("WEIGHT = 1\n")
    (tmp_path / "user_plugin.py").write_text("import kit\n")
    (tmp_path / "other_plugin.py").write_text(textwrap.dedent("""
        from harness.api import MethodSpec
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(host_module, "TOOLKITS", (*host_module.TOOLKITS, "kit"))
    for name in ("kit", "user_plugin", "other_plugin"):
        importlib.import_module(name)

    def digests() -> tuple[str, str]:
        source_digest.cache_clear()
        return source_digest("user_plugin"), source_digest("other_plugin")

    before = digests()
    (tmp_path / "kit.py").write_text("WEIGHT = 2\n")
    after = digests()
    assert after[0] != before[0] and after[1] == before[1]
    source_digest.cache_clear()
