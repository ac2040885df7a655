"""Digests of every zoo model as built by the code at hand, to show that a change to the zoo's
build or training code leaves the weights alone (or which ones it changes).

    HARNESS_CACHE=/fresh/dir python benchmarks/zoo_digests.py out.json [NAME ...]
    python benchmarks/zoo_digests.py --compare before.json after.json

Builds each named zoo model (default: all) into `$HARNESS_CACHE` (give it a fresh folder, or
the cached copies are hashed), then records the sha256 of every tensor of its state dict and
of every other file it saved. Results are merged into `out.json` as they come.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any


def model_digest(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from harness.training import tensor_digest

    tensors: dict[str, str] = {}
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        relative = str(path.relative_to(folder))
        if path.suffix == ".safetensors":
            tensors |= {f"{relative}:{name}": tensor_digest(tensor)
                        for name, tensor in load_file(path).items()}
        else:
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    whole = hashlib.sha256(json.dumps(tensors, sort_keys=True).encode()).hexdigest()
    return {"state_dict": whole, "tensors": tensors, "files": files}


def compare(before_path: str, after_path: str) -> int:
    before, after = (json.loads(Path(p).read_text()) for p in (before_path, after_path))
    changed = 0
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            print(f"{name:34} only {'after' if old is None else 'before'}")
            continue
        weights = "same weights" if old["state_dict"] == new["state_dict"] else "WEIGHTS DIFFER"
        files = sorted(f for f in set(old["files"]) | set(new["files"])
                       if old["files"].get(f) != new["files"].get(f))
        changed += weights != "same weights"
        print(f"{name:34} {weights}  {old['state_dict'][:12]} -> {new['state_dict'][:12]}"
              + (f"  other files differ: {', '.join(files)}" if files else ""))
    return 1 if changed else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compare"] and len(argv) == 3:
        return compare(argv[1], argv[2])
    if not argv:
        print(__doc__)
        return 2
    import torch

    from harness.zoo import RECIPES, ZOO_PREFIX, zoo_path

    torch.set_num_threads(1)
    out = Path(argv[0])
    for name in argv[1:] or list(RECIPES):
        digest = model_digest(zoo_path(ZOO_PREFIX + name))
        done = json.loads(out.read_text()) if out.exists() else {}
        out.write_text(json.dumps(done | {name: digest}, indent=1, sort_keys=True))
        print(name, digest["state_dict"][:12], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
