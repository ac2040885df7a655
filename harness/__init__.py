"""harness: a plugin-based benchmark harness for methods that compose, fuse and adapt LLMs.

Plugin authors import from `harness.api`, the public surface (hook marker, descriptors,
helpers); the other modules are the host's own.
"""

import pluggy

__version__ = "0.2.0"

hookimpl = pluggy.HookimplMarker("harness")

__all__ = ["hookimpl", "__version__"]
