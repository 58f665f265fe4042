"""attnport's PyTorch implementations: `SEBlock`, `ECABlock` and the bridge functions."""
from .bridge import FRAMEWORK, MODULES, apply, build, export_params, load_params
from .eca import ECABlock
from .se import SEBlock

__all__ = ["SEBlock", "ECABlock", "FRAMEWORK", "MODULES", "build", "load_params", "export_params", "apply"]
