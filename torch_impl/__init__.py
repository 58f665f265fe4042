"""attnport's PyTorch implementations: `SEBlock`, `ECABlock`, `CBAMBlock` and the bridge functions."""
from .bridge import FRAMEWORK, MODULES, apply, build, export_params, load_params, vjp
from .cbam import CBAMBlock
from .eca import ECABlock
from .peers import from_timm, from_torchvision, to_timm, to_torchvision
from .se import SEBlock

__all__ = ["SEBlock", "ECABlock", "CBAMBlock", "FRAMEWORK", "MODULES", "build", "load_params", "export_params",
           "apply", "vjp", "from_timm", "to_timm", "from_torchvision", "to_torchvision"]
