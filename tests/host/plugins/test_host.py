"""Plugin discovery, blocking, hook validation and the torch-free listing path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.host import load_host

from support import run_cli


def test_builtins_register_through_entry_points() -> None:
    host = load_host()
    assert {"single"} <= set(host.methods)
    assert {"mmlu", "gsm8k"} <= set(host.tasks)
    assert host.origin_of("single") == "built-in"
    assert host.origin_of("mmlu") == "built-in"


def test_block_plugin_with_no_prefix() -> None:
    host = load_host(["no:mmlu"])
    assert "mmlu" not in host.tasks and "gsm8k" in host.tasks


def _plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_misspelt_hook_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _plugin_module(tmp_path, monkeypatch, "typo_plugin", """
        from harness import hookimpl

        @hookimpl
        def harness_method():
            return []
    """)
    with pytest.raises(HarnessError, match="unknown hook"):
        load_host([module])


def test_plugin_that_raises_at_import_is_one_clear_error(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    module = _plugin_module(tmp_path, monkeypatch, "broken_plugin", "raise RuntimeError('boom')\n")
    with pytest.raises(HarnessError, match="broken_plugin.*failed to import: RuntimeError: boom"):
        load_host([module])
    result = run_cli("-p", module, "list", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_duplicate_method_names_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _plugin_module(tmp_path, monkeypatch, "dup_plugin", """
        from harness import hookimpl
        from harness.contract import MethodSpec

        @hookimpl
        def harness_methods():
            return [MethodSpec(name="single", description="again", build=lambda ctx: None)]
    """)
    with pytest.raises(HarnessError, match="provided twice"):
        load_host([module])


def test_help_list_and_leaderboard_do_not_import_torch() -> None:
    probe = textwrap.dedent("""
        import sys
        from harness.cli import main
        for argv in (["list"], ["list", "--json"]):
            main(argv)
        import harness.report.writers, harness.report.terminal, harness.report.compare
        heavy = [m for m in ("torch", "transformers", "lm_eval", "datasets") if m in sys.modules]
        print("HEAVY:", heavy)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY: []" in result.stdout


def test_list_shows_origin_capabilities_and_description() -> None:
    result = run_cli("list", "--json")
    assert result.returncode == 0
    import json

    listing = json.loads(result.stdout)
    single = next(m for m in listing["methods"] if m["name"] == "single")
    assert single["origin"] == "built-in"
    assert set(single["capabilities"]) == {"loglikelihood", "generate_until"}
    assert single["description"]


def test_loading_an_already_registered_module_again_is_a_no_op() -> None:
    host = load_host(["harness.tasks.mmlu"])
    assert host.origin_of("mmlu") == "built-in"
