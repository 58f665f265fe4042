"""attnport's Flax NNX implementations: `SEBlock`, `ECABlock`, `CBAMBlock`, the `ResNet` network
(`jax_impl.nets`), the `MobileNet` network (MobileNetV3 / EfficientNet, `jax_impl.mobile`), the adapter
and the bridge functions."""
from .adapter import ADAPTER, MODULES, apply, build, export_params, load_params, vjp, x64_scope
from .cbam import CBAMBlock
from .eca import ECABlock
from .mobile import MobileNet
from .nets import ResNet, load_safetensors
from .se import SEBlock

__all__ = ["SEBlock", "ECABlock", "CBAMBlock", "ResNet", "MobileNet", "load_safetensors", "ADAPTER", "MODULES", "build", "load_params",
           "export_params", "apply", "vjp", "x64_scope"]
