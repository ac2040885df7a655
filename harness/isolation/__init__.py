"""Running untrusted, model-written programs: the toolkit's face. Task plugins import these
names and nothing else of the package.

- `Program` and `Limits`: a candidate program with its checker, and the time, memory,
  process and file-size limits each runs under.
- `run_programs`: run programs in parallel (at most `MAX_WORKERS`), each confined in its
  own process, uid, cgroup and (with bubblewrap) namespaces.
- `isolation`: the layers this machine provides; `weak_isolation_refusal` says why a run
  refuses to go on with fewer of them unless the user opts in.

Nothing here imports torch.
"""

from harness.isolation._confinement import MAX_WORKERS
from harness.isolation._sandbox import (Limits, Program, isolation, run_programs,
                                        weak_isolation_refusal)

__all__ = ["Program", "Limits", "run_programs", "MAX_WORKERS", "isolation",
           "weak_isolation_refusal"]
