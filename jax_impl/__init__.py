"""attnport's Flax NNX implementations: `SEBlock`, `ECABlock` and the bridge functions."""
from .bridge import FRAMEWORK, MODULES, apply, build, export_params, load_params, x64_scope
from .eca import ECABlock
from .se import SEBlock

__all__ = ["SEBlock", "ECABlock", "FRAMEWORK", "MODULES", "build", "load_params", "export_params", "apply",
           "x64_scope"]
