"""Keras applications (``keras/src/applications``): the SE blocks of EfficientNet and MobileNetV3.

Key convention: a flat ``{variable path: array}`` keyed like Keras 3's ``variable.path``, which is
``"<layer name>/<variable name>"`` (``"block2a_se_reduce/kernel"``), with the enclosing model's name
in front when the model is nested in another (``"efficientnetb0/block2a_se_reduce/kernel"``; the
module prefix then carries it). `tf_impl.weights_from_keras_model` builds that dict from a live model
and `tf_impl.assign_keras_weights` writes one back. A Keras 3 ``.weights.h5`` file does *not* use these names:
it stores ``layers/<auto name>/vars/<index>`` (``layers/conv2d_5/vars/0``), where the auto name
comes from the layer's class, not from ``layer.name``, so an SE block cannot be found in one by its
keys -- load the file into the model (``model.load_weights``) and read the model instead.

| block (file) | prefix | keys after ``prefix + "_"`` | facts |
|---|---|---|---|
| EfficientNet / EfficientNetV2 ``block()`` (``efficientnet.py``, ``efficientnet_v2.py``) | ``block2a`` | ``se_reduce/kernel`` [1, 1, C, R], ``se_reduce/bias`` [R], ``se_expand/kernel`` [1, 1, R, C], ``se_expand/bias`` [C] | `reference.SE.efficientnet`: ``activation="swish"`` (SiLU), ``"sigmoid"``; R = max(1, int(filters_in * 0.25)) read from the kernel |
| MobileNetV3 ``_se_block()`` (``mobilenet_v3.py``) | ``expanded_conv`` (block 0), ``expanded_conv_3``, ... (only the blocks built with ``se_ratio``) | ``squeeze_excite_conv/kernel`` [1, 1, C, R], ``squeeze_excite_conv/bias``, ``squeeze_excite_conv_1/kernel`` [1, 1, R, C], ``squeeze_excite_conv_1/bias`` | `reference.SE.mobilenetv3`: ``ReLU``, ``hard_sigmoid`` = ``ReLU(6.)(x + 3.) * (1. / 6.)`` |

Kernels [1, 1, in, out] become canonical [out, in] (``kernel[0, 0].T``) and back.
"""
from __future__ import annotations

import numpy as np

from .base import ModuleTable, PeerLayout, mlp_leaves


def _se(name, source, reduce, expand, preset, scope, home):
    return ModuleTable(
        name, "se", source, join="_", scope=scope,
        leaves=mlp_leaves(reduce, expand, "keras_conv1x1", sep="/", weight="kernel"),
        presets=(preset,), home=home,
    )


EFFICIENTNET_SE = _se("EfficientNet SE", "keras/src/applications/efficientnet.py block()",
                      "se_reduce", "se_expand", "efficientnet", "se_", r"(.+/)?block\d+[a-z]")
MOBILENETV3_SE = _se("MobileNetV3 SE", "keras/src/applications/mobilenet_v3.py _se_block()",
                     "squeeze_excite_conv", "squeeze_excite_conv_1", "mobilenetv3", "squeeze_excite_",
                     r"(.+/)?expanded_conv(_\d+)?")

LAYOUT = PeerLayout("keras-applications", (EFFICIENTNET_SE, MOBILENETV3_SE), doc=__doc__)
