"""attnport's PyTorch implementations: `SEBlock`, `ECABlock`, `CBAMBlock` and the bridge functions."""
from .bridge import FRAMEWORK, MODULES, apply, build, export_params, load_params, vjp
from .cbam import CBAMBlock
from .eca import ECABlock
from .se import SEBlock

__all__ = ["SEBlock", "ECABlock", "CBAMBlock", "FRAMEWORK", "MODULES", "build", "load_params", "export_params", "apply", "vjp"]
