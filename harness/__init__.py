"""harness: a plugin-based benchmark harness for methods that compose, fuse and adapt LLMs.

Plugin authors need only `hookimpl` and the descriptors in `harness.specs`.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("harness")

__all__ = ["hookimpl", "__version__"]
