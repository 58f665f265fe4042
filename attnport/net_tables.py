"""The whole-network tables of docs/reference/networks.md, generated from `reference.nets` (tested)."""
from __future__ import annotations

from reference import nets

FAMILY_TITLES = {
    "baseline": "baselines without attention", "timm-se": "timm SE-ResNet / SE-ResNeXt",
    "timm-eca": "timm ECA-ResNet", "timm-cbam": "timm ResNet + CbamModule",
    "official-eca": "official ECA-Net", "official-cbam": "official CBAM (ImageNet form)",
    "mobilenetv3": "MobileNetV3", "efficientnet": "EfficientNet",
}


def _mobile_structure(spec) -> str:
    blocks = spec.blocks()
    kinds = "/".join(k for k in ("ds", "ir", "cn") if any(b.kind == k for b in blocks))
    se = sorted({r.se for stage in spec.stages for r in stage if r.se})
    parts = [f"{kinds}, {len(blocks)} blocks in {len(spec.stages)} stages", f"stem {spec.stem_channels}",
             f"{spec.head} head {spec.head_channels}"]
    parts += [f"SE.{s}" for s in se]
    parts.append(f"padding {spec.padding}, BN eps {spec.bn_eps:g}")
    if spec.preprocessing != "none":
        parts.append(f"preprocessing {spec.preprocessing}")
    return ", ".join(parts)


def _structure(spec) -> str:
    if isinstance(spec, nets.MobileNet):
        return _mobile_structure(spec)
    parts = [f"{spec.block}", "-".join(map(str, spec.layers))]
    if spec.stem_type:
        parts.append(f"stem {spec.stem_type} {spec.stem_width}")
    if spec.avg_down:
        parts.append("avg_down")
    if spec.cardinality > 1:
        parts.append(f"{spec.cardinality}x{spec.base_width}d")
    if spec.attention:
        attn = f"{spec.attention.upper()}.{spec.attention_preset}"
        if spec.eca_kernels:
            attn += " k" + "".join(map(str, spec.eca_kernels))
        parts.append(attn)
    return ", ".join(parts)


def model_table() -> str:
    """One row per named network: name, family, structure, trainable parameters, the peer it equals."""
    lines = ["| name | family | structure | parameters | equals |", "|---|---|---|---|---|"]
    for name, entry in nets.ALL.items():
        spec = nets.get(name)
        lines.append(f"| `{name}` | {FAMILY_TITLES[entry.family]} | {_structure(spec)} | "
                     f"{spec.num_trainable_params():,} | `{entry.peer}` |")
    return "\n".join(lines)
