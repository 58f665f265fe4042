"""attnport's Keras 3 (TensorFlow) layers: `SEBlock`, `ECABlock`, `CBAMBlock`, the article's
`se_block`/`eca_block`, whole ResNet-family networks (`build_resnet` -> `ResNetModel`), MobileNetV3 / EfficientNet
(`build_mobilenet` -> `MobileNetModel`), the adapter and the bridge functions."""
from .adapter import ADAPTER, MODULES, apply, build, export_params, load_params, vjp
from .cbam import CBAMBlock
from .eca import ECABlock, eca_block
from .mobile import MobileNetModel, SamePad2D, build_mobilenet
from .nets import ResNetModel, TorchMaxPool2D, build_resnet
from .peers import assign_keras_weights, from_keras_application, to_keras_application, weights_from_keras_model
from .se import SEBlock, se_block

__all__ = ["SEBlock", "ECABlock", "CBAMBlock", "se_block", "eca_block", "build_resnet", "ResNetModel", "TorchMaxPool2D",
           "build_mobilenet", "MobileNetModel", "SamePad2D",
           "ADAPTER", "MODULES", "build", "load_params",
           "export_params", "apply", "vjp", "from_keras_application",
           "to_keras_application", "weights_from_keras_model", "assign_keras_weights"]
