"""Plugins stand on the public surface: built-in methods and tasks import names from
`harness.api` and from the faces of the toolkits (exactly the names each face exports),
their own package, and nothing else of the host. The faces stay light."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import harness.api

from support import REPO

# Every toolkit face and exactly what it exports: a change here is a change of the public
# surface, made on purpose.
FACES = {
    "harness.fusion": {"PackOptions", "build_pack_lm", "tokenizer_families", "Weighting",
                       "PerplexitySoftmax", "GreedyGrid", "TopOne", "ExpertContrast"},
    "harness.fuse": {"FuseOptions", "Bridge", "Side", "word_start_token", "SearchConfig",
                     "search", "CaptionObjective", "CaptionWeights", "PrimaryLM", "ClipText",
                     "Member", "discover", "SEPARATOR"},
    "harness.isolation": {"Program", "Limits", "run_programs", "MAX_WORKERS", "isolation",
                          "weak_isolation_refusal"},
    "harness.judge": {"JudgeSettings", "JudgeRequest", "JudgmentCache", "run_judgments",
                      "parse_rating", "parse_preference", "expected_rating",
                      "read_judge_prompts"},
}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every absolute import of the harness in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return [(m, names) for m, names in found if m == "harness" or m.startswith("harness.")]


def test_plugins_import_only_the_public_surface_by_exact_name() -> None:
    exported = {"harness.api": set(harness.api.__all__), "harness": {"hookimpl"}, **FACES}
    offenders = []
    for folder in ("plugins", "tasks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            own = f"harness.{folder}.{path.relative_to(REPO / folder).parts[0]}"
            for module, names in _imports(path):
                if module == own or module.startswith(own + "."):
                    continue
                unknown = sorted(set(names) - exported.get(module, set()))
                if module not in exported or unknown or not names:
                    offenders.append(f"{path.relative_to(REPO)}: {module} {unknown or ''}")
    assert offenders == []


def test_each_face_exports_exactly_its_names() -> None:
    for face, names in FACES.items():
        module = importlib.import_module(face)
        assert set(module.__all__) == names, face
        assert all(getattr(module, name) is not None for name in names), face


def test_the_public_surface_stays_light_and_complete() -> None:
    missing = [name for name in harness.api.__all__ if not hasattr(harness.api, name)]
    assert missing == []
    probe = ("import sys, harness.api, harness.contract, " + ", ".join(FACES) + "\n"
             "print([m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
