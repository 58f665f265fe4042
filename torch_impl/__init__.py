"""attnport's PyTorch implementations: `SEBlock`, `ECABlock`, `CBAMBlock`, the `ResNet` and `MobileNet` networks,
the adapter and the bridge functions."""
from .adapter import ADAPTER, MODULES, apply, build, export_params, load_params, vjp
from .cbam import CBAMBlock
from .eca import ECABlock
from .mobile import MobileNet
from .nets import ResNet
from .peers import from_timm, from_torchvision, to_timm, to_torchvision
from .se import SEBlock

__all__ = ["SEBlock", "ECABlock", "CBAMBlock", "ResNet", "MobileNet", "ADAPTER", "MODULES", "build", "load_params",
           "export_params", "apply", "vjp", "from_timm", "to_timm", "from_torchvision", "to_torchvision"]
