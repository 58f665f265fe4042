"""`verify` on a whole network: find the first stage (the stem, a block, the head) whose output leaves the
network tolerance, and name the bug there (docs/how-to/verify-a-network.md).

What it adds to `attnport.verification.verify` for a network spec:

1. **Taps.** Each stage of `reference.nets.stages(spec)` ("stem", every block path, "head") is matched to a
   sub-module of the candidate (`locate`): ``taps=`` given by the user first, then a module named like the
   stage (``layer2.0``, or ending in ``.layer2.0``), then the last one inside it (``layer2.0.act2``, a Keras
   functional model's flat layers); the stem's output is read as the first block's input. The candidate's
   intermediate outputs come from its framework's own mechanism (`attnport.adapter.Adapter.run_tapped`:
   torch forward hooks, a Keras sub-model, NNX interception); "head" is the logits.
2. **Per stage.** Max abs and max rel error against the oracle's stage output, within
   `reference.network_tolerance` of that output, on every battery input.
3. **First divergence.** The first read stage outside the tolerance, every read stage before it within. A
   stage that was not read widens the span back to the last one that was.
4. **Diagnosis.** Every entry of `NET_CATALOGUE` (and, for an attention block in the span, of the block
   `CATALOGUE`) proposes `reference.nets.Ops` that compute one layer of the span as a known bug would;
   the span is re-run from the oracle's input to it with those ops and compared with the candidate's
   output there. An entry is named when one of its alternatives agrees on every input. The whole network
   is then re-run with the named alternative (at that layer, then at every such layer): the report says
   whether that explains every later stage and the logits, or where the candidate diverges again.
5. **Training** (``check_training=True``): two training-mode forwards on the same batch give each
   BatchNorm's momentum from its running mean, ``m = 1 - (r2 - r1) / (r1 - r0)`` (torch's convention);
   a port whose momentum is ``1 - reference.nets.BN_MOMENTUM`` has it in the other convention.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import reference
from reference.nets import EXACT, Ops

NO_TAP = "not read"


# --------------------------------------------------------------------------- report rows


@dataclass
class StageResult:
    """One stage of the network on every battery input: ``tap`` is the candidate's module it was read at
    (None: not read); ``max_abs`` / ``max_rel`` the largest over the inputs (None where not compared)."""

    stage: str
    tap: str | None
    max_abs: float | None
    max_rel: float | None
    rtol: float
    atol: float
    passed: bool | None  # None: not read
    error: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class NetworkFindings:
    """What `attnport.verify` adds to its `Report` for a whole network (``report.network``)."""

    stages: list = field(default_factory=list)
    first_divergence: str | None = None
    span: tuple = ()  # the stages the diagnosis re-ran: those after the last read stage within, to the first diverging
    explains_all: bool | None = None
    diverges_again: str | None = None
    training: list = field(default_factory=list)  # [(bn name, inferred torch-convention momentum)]
    training_diagnosis: list = field(default_factory=list)

    @property
    def training_failed(self) -> bool:
        return bool(self.training_diagnosis)

    def explanation_line(self) -> str | None:
        """Whether the named bug explains everything after the first divergence (None: nothing named)."""
        if self.explains_all is None:
            return None
        if self.explains_all:
            return "the named bug explains every later stage and the logits"
        return (f"the named bug explains the first divergence only: the candidate diverges again at "
                f"`{self.diverges_again}`, which this report does not explain")

    def to_dict(self) -> dict:
        return {"stages": [r.to_dict() for r in self.stages], "first_divergence": self.first_divergence,
                "span": list(self.span), "explains_all": self.explains_all, "diverges_again": self.diverges_again,
                "bn_momentum": [{"bn": n, "momentum": m} for n, m in self.training]}

    def markdown(self) -> list[str]:
        fmt = (lambda v: "-" if v is None else f"{v:.3g}")  # noqa: E731
        out = ["", "## Stages", "", "| stage | read at | max abs | max rel | atol | rtol | result |",
               "|---|---|---|---|---|---|---|"]
        for r in self.stages:
            if r.passed is None:
                res = NO_TAP
            elif r.passed:
                res = "pass"
            else:
                res = ("**FIRST DIVERGENCE**" if r.stage == self.first_divergence else "FAIL") + (
                    f" ({r.error})" if r.error else "")
            out.append(f"| {r.stage} | {r.tap or '-'} | {fmt(r.max_abs)} | {fmt(r.max_rel)} | {fmt(r.atol)} "
                       f"| {fmt(r.rtol)} | {res} |")
        if self.first_divergence:
            out += ["", f"First divergence: `{self.first_divergence}` (diagnosed over "
                        f"{', '.join(f'`{s}`' for s in self.span)})."]
            line = self.explanation_line()
            if line:
                out.append(line[0].upper() + line[1:] + ".")
        if self.training:
            out += ["", "BatchNorm momentum (torch's convention) from two training-mode forwards: "
                    + ", ".join(f"{n} {m:.3g}" for n, m in self.training[:6])
                    + (f" and {len(self.training) - 6} more" if len(self.training) > 6 else "") + "."]
        return out


# --------------------------------------------------------------------------- locating the taps


def _under(name: str, stage: str) -> bool:
    return name == stage or name.endswith("." + stage)


def _inside(name: str, stage: str) -> bool:
    return name.startswith(stage + ".") or ("." + stage + ".") in name


def locate(names: list[str], stages: list[str], given: dict | None = None) -> dict:
    """``{stage: (candidate module name, "output" | "input")}`` for every stage that can be read.

    ``given`` maps a stage to a candidate name (read at its output). Otherwise a module named like the
    stage, else the last module inside it (in the framework's order); the stem is read as the input of the
    first block's module (or of the first module inside it) unless a module is named "stem".
    """
    given = dict(given or {})
    out = {}
    for stage in stages:
        if stage == "head":
            continue
        if stage in given:
            out[stage] = (given[stage], "output")
            continue
        exact = [n for n in names if _under(n, stage)]
        inside = [n for n in names if _inside(n, stage)]
        if exact:
            out[stage] = (min(exact, key=len), "output")
        elif inside and stage != "stem":
            out[stage] = (inside[-1], "output")
    if "stem" not in out and len(stages) > 1:
        first = stages[1]
        exact = [n for n in names if _under(n, first)]
        inside = [n for n in names if _inside(n, first)]
        if first in given:
            pass  # the user's module for the first block may not take the stem's output as its first input
        elif exact:
            out["stem"] = (min(exact, key=len), "input")
        elif inside:
            out["stem"] = (inside[0], "input")
    return out


# --------------------------------------------------------------------------- the oracle, stage by stage


class Recorder(Ops):
    """`EXACT` that also lists the layers each call touches: ``calls`` [(method, name, details)]."""

    def __init__(self):
        self.calls = []

    def conv(self, name, x, w, mode="symmetric", stride=1, groups=1):
        self.calls.append(("conv", name, dict(mode=mode, stride=stride, groups=groups, shape=w.shape,
                                              cin=x.shape[-1])))
        return super().conv(name, x, w, mode, stride, groups)

    def bn(self, name, x, p, eps):
        self.calls.append(("bn", name, {}))
        return super().bn(name, x, p, eps)

    def max_pool(self, name, x):
        self.calls.append(("max_pool", name, {}))
        return super().max_pool(name, x)

    def avg_pool(self, name, x):
        self.calls.append(("avg_pool", name, {}))
        return super().avg_pool(name, x)

    def attention(self, name, spec, p, x):
        self.calls.append(("attention", name, dict(spec=spec, params=p)))
        return super().attention(name, spec, p, x)

    def merge(self, name, y, shortcut, attend, act):
        self.calls.append(("merge", name, {}))
        return super().merge(name, y, shortcut, attend, act)

    def linear(self, name, v, p):
        self.calls.append(("linear", name, dict(shape=p[f"{name}.weight"].shape)))
        return super().linear(name, v, p)

    def preprocess(self, name, spec, p, x):
        self.calls.append(("preprocess", name, {}))
        return super().preprocess(name, spec, p, x)


def run_stages(stages, p, x, ops=EXACT, start: int = 0, stop: int | None = None) -> list:
    """The outputs of ``stages[start:stop]`` run in order from ``x`` (channels-last float64)."""
    out = []
    for stage in stages[start:stop]:
        x = stage.run(p, x, ops)
        out.append(x)
    return out


def inventory(stages, p, x) -> dict:
    """``{stage name: [(method, layer name, details)]}``: what each stage calls, from one exact run."""
    found = {}
    for stage in stages:
        rec = Recorder()
        x = stage.run(p, x, rec)
        found[stage.name] = rec.calls
    return found


# --------------------------------------------------------------------------- the network catalogue
# Each alternative is `Ops` computing one kind of layer as a known bug does, at the layers in ``where``.


class _At(Ops):
    """`EXACT` everywhere but at the layer names in ``where``."""

    def __init__(self, where):
        self.where = set(where)


class SwapPadding(_At):
    def conv(self, name, x, w, mode="symmetric", stride=1, groups=1):
        if name in self.where:
            mode = "same" if mode == "symmetric" else "symmetric"
        return super().conv(name, x, w, mode, stride, groups)


class OtherEps(_At):
    def __init__(self, where, eps):
        super().__init__(where)
        self.eps = eps

    def bn(self, name, x, p, eps):
        return super().bn(name, x, p, self.eps if name in self.where else eps)


class ZeroPaddedMaxPool(_At):
    def max_pool(self, name, x):
        if name not in self.where:
            return super().max_pool(name, x)
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))[:, ::2, ::2]
        return win.max(axis=(-2, -1))


class AvgPoolCounted(_At):
    """The shortcut pool with ``count_include_pad=True`` over a zero-padded ceil window (a cut window
    divided by 4), or with ``ceil_mode=False`` (floor: the last odd row and column dropped)."""

    def __init__(self, where, mode):
        super().__init__(where)
        self.mode = mode

    def avg_pool(self, name, x):
        if name not in self.where:
            return super().avg_pool(name, x)
        n, h, w, c = x.shape
        if self.mode == "floor":
            x = x[:, : h - h % 2, : w - w % 2]
            return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
        xp = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        return xp.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c).mean(axis=(2, 4))


class DepthwiseScrambled(_At):
    """A depthwise kernel [C, 1, kh, kw] moved with a reshape where a transpose was needed (torch's bytes
    read as Keras' [kh, kw, C, 1] / Flax's [kh, kw, 1, C]), or with kh and kw swapped."""

    def __init__(self, where, mode):
        super().__init__(where)
        self.mode = mode

    def conv(self, name, x, w, mode="symmetric", stride=1, groups=1):
        if name in self.where:
            c, _, kh, kw = w.shape
            w = (w.reshape(kh, kw, c, 1).transpose(2, 3, 0, 1) if self.mode == "reshape"
                 else w.transpose(0, 1, 3, 2))
        return super().conv(name, x, np.ascontiguousarray(w), mode, stride, groups)


def _interleave(n: int, groups: int) -> np.ndarray:
    """Channel order that lists group 0 as channels 0, g, 2g, ... (channel c in group c % g)."""
    return np.argsort(np.arange(n) % groups, kind="stable")


class GroupOrder(_At):
    """A grouped conv whose channels belong to groups by ``c % groups`` (strided slices) instead of
    contiguous blocks, on its input, its output or both."""

    def __init__(self, where, side):
        super().__init__(where)
        self.side = side

    def conv(self, name, x, w, mode="symmetric", stride=1, groups=1):
        if name not in self.where or groups == 1:
            return super().conv(name, x, w, mode, stride, groups)
        if self.side in ("input", "both"):
            x = x[..., _interleave(x.shape[-1], groups)]
        y = super().conv(name, x, w, mode, stride, groups)
        if self.side in ("output", "both"):
            y = y[..., np.argsort(_interleave(y.shape[-1], groups))]
        return y


class ResidualFirst(_At):
    """The residual added before the attention: ``act(attend(y + s))`` or ``attend(act(y + s))``."""

    def __init__(self, where, after_act):
        super().__init__(where)
        self.after_act = after_act

    def merge(self, name, y, shortcut, attend, act):
        if name not in self.where:
            return super().merge(name, y, shortcut, attend, act)
        return attend(act(y + shortcut)) if self.after_act else act(attend(y + shortcut))


class NoAttention(_At):
    def attention(self, name, spec, p, x):
        return x if name in self.where else super().attention(name, spec, p, x)


class ClassifierRead(_At):
    """The classifier's [out, in] weight used transposed (square) or its bytes read as [in, out]."""

    def __init__(self, where, mode):
        super().__init__(where)
        self.mode = mode

    def linear(self, name, v, p):
        if name in self.where:
            w = p[f"{name}.weight"]
            w = w.T if self.mode == "transpose" else w.reshape(w.shape[1], w.shape[0]).T
            p = {**p, f"{name}.weight": np.ascontiguousarray(w)}
        return super().linear(name, v, p)


class Preprocessing(_At):
    """The preprocessing run ``times`` times, after an extra rescale (`reference.nets.mobile.RESCALES`) with
    ``rescale_first``."""

    def __init__(self, where, times, rescale_first=False):
        super().__init__(where)
        self.times, self.rescale_first = times, rescale_first

    def preprocess(self, name, spec, p, x):
        if name not in self.where:
            return super().preprocess(name, spec, p, x)
        if self.rescale_first:
            from reference.nets.mobile import RESCALES

            scale, offset = RESCALES[spec.preprocessing]
            x = x * scale + offset
        for _ in range(self.times):
            x = super().preprocess(name, spec, p, x)
        return x


class BlockAlternative(_At):
    """An attention block computed by a block-catalogue alternative (`attnport.verification.CATALOGUE`)."""

    def __init__(self, where, run):
        super().__init__(where)
        self.run = run

    def attention(self, name, spec, p, x):
        return self.run(x, "channels_last") if name in self.where else super().attention(name, spec, p, x)


@dataclass(frozen=True)
class NetAlternative:
    detail: str
    here: Ops          # the bug at the span's layer(s)
    everywhere: Ops | None = None  # the same bug at every layer of its kind in the network


@dataclass(frozen=True)
class NetEntry:
    name: str
    explanation: str
    fix: str
    make: object  # (spec, span_calls [(method, name, details)], all_calls) -> [NetAlternative]


def _named(calls, method, test=lambda d: True):
    return [n for m, n, d in calls if m == method and test(d)]


def _alt_padding(spec, span, every):
    strided = lambda d: d["stride"] == 2 and max(d["shape"][2:]) > 1  # noqa: E731
    here = _named(span, "conv", strided)
    other = "TF 'SAME' (extra zero right/bottom)" if _mode(spec) == "symmetric" else "symmetric (k // 2)"
    out = [NetAlternative(f"{n} padded {other}", SwapPadding([n]), SwapPadding(_named(every, "conv", strided)))
           for n in here]
    return out


def _mode(spec) -> str:
    return getattr(spec, "padding", "symmetric")


def _alt_eps(spec, span, every):
    bns, out = _named(span, "bn"), []
    for eps in sorted({1e-3, 1e-5} - {spec.bn_eps}):
        everywhere = OtherEps(_named(every, "bn"), eps)
        out += [NetAlternative(f"{n} with eps {eps:g} instead of {spec.bn_eps:g}", OtherEps([n], eps), everywhere)
                for n in bns]
        if len(bns) > 1:
            out.append(NetAlternative(f"every BatchNorm of the span with eps {eps:g} instead of {spec.bn_eps:g}",
                                      OtherEps(bns, eps), everywhere))
    return out


def _alt_maxpool(spec, span, every):
    return [NetAlternative(f"{n} padded with zeros", ZeroPaddedMaxPool([n])) for n in _named(span, "max_pool")]


def _alt_avg_down(spec, span, every):
    out = []
    for n in _named(span, "avg_pool"):
        for mode, what in (("counted", "count_include_pad=True (a cut window divided by 4)"),
                           ("floor", "ceil_mode=False")):
            out.append(NetAlternative(f"{n} with {what}", AvgPoolCounted([n], mode),
                                      AvgPoolCounted(_named(every, "avg_pool"), mode)))
    return out


def _depthwise(d) -> bool:
    return d["groups"] > 1 and d["groups"] == d["cin"] and d["shape"][1] == 1


def _alt_depthwise(spec, span, every):
    out = []
    for n in _named(span, "conv", _depthwise):
        for mode, what in (("reshape", "moved with a reshape instead of a transpose"), ("swap", "kh and kw swapped")):
            out.append(NetAlternative(f"{n} kernel {what}", DepthwiseScrambled([n], mode),
                                      DepthwiseScrambled(_named(every, "conv", _depthwise), mode)))
    return out


def _alt_groups(spec, span, every):
    grouped = lambda d: d["groups"] > 1 and not _depthwise(d)  # noqa: E731
    out = []
    for n in _named(span, "conv", grouped):
        for side in ("input", "output", "both"):
            out.append(NetAlternative(f"{n}: {side} channels grouped by c % groups instead of in contiguous blocks",
                                      GroupOrder([n], side), GroupOrder(_named(every, "conv", grouped), side)))
    return out


def _alt_residual(spec, span, every):
    out = []
    blocks = [n for n in _named(span, "merge") if any(a.startswith(n + ".") for a in _named(span, "attention"))]
    for n in blocks:
        all_blocks = _named(every, "merge")
        out.append(NetAlternative(f"{n}: relu(attention(y + shortcut))", ResidualFirst([n], False),
                                  ResidualFirst(all_blocks, False)))
        out.append(NetAlternative(f"{n}: attention(relu(y + shortcut))", ResidualFirst([n], True),
                                  ResidualFirst(all_blocks, True)))
    return out


def _alt_no_attention(spec, span, every):
    return [NetAlternative(f"{n} not applied", NoAttention([n]), NoAttention(_named(every, "attention")))
            for n in _named(span, "attention")]


def _alt_classifier(spec, span, every):
    out = []
    for n, d in [(n, d) for m, n, d in span if m == "linear"]:
        if d["shape"][0] == d["shape"][1]:
            out.append(NetAlternative(f"{n}.weight used transposed", ClassifierRead([n], "transpose")))
        out.append(NetAlternative(f"{n}.weight's [out, in] bytes read as [in, out]", ClassifierRead([n], "reshape")))
    return out


def _alt_preprocessing(spec, span, every):
    out = []
    for n in _named(span, "preprocess"):
        if getattr(spec, "preprocessing", "none") != "none":
            out.append(NetAlternative(f"{spec.preprocessing} applied twice", Preprocessing([n], 2)))
            out.append(NetAlternative(f"{spec.preprocessing} not applied", Preprocessing([n], 0)))
            if spec.preprocessing == "keras_efficientnet":  # x / 255 outside too, then the model's own
                out.append(NetAlternative(f"{spec.preprocessing}'s rescale applied outside too, before the model's "
                                          "own preprocessing", Preprocessing([n], 1, rescale_first=True)))
    return out


NET_CATALOGUE = (
    NetEntry("same_padding", "a stride-2 convolution padded the other way: TF/Keras/Flax 'SAME' puts the extra "
             "zero on the right and bottom, torch's padding=k // 2 pads both sides (they differ on even sizes)",
             "pad explicitly as the spec does: ZeroPadding2D(k // 2) + 'valid' for symmetric, "
             "reference.nets.layers.same_pads for 'same'", _alt_padding),
    NetEntry("bn_eps", "BatchNorm epsilon 1e-3 (Keras' default) vs 1e-5 (torch's and Flax's default)",
             "pass the spec's bn_eps to every BatchNorm explicitly", _alt_eps),
    NetEntry("maxpool_zero_padding", "the stem's max-pool padded with zeros where torch pads with -inf (equal "
             "only when the pool's input is non-negative)",
             "pad with -inf (Keras MaxPooling2D 'same' on an explicitly padded input, or -inf in jnp.pad)",
             _alt_maxpool),
    NetEntry("avg_down_pool", "the avg_down shortcut pool is not AvgPool2d(2, 2, ceil_mode=True, "
             "count_include_pad=False): a window cut by the edge is averaged over 4 or dropped",
             "average only the elements inside the input, and keep the last cut window (ceil_mode)", _alt_avg_down),
    NetEntry("depthwise_layout", "a depthwise kernel in the wrong layout: torch [C, 1, kh, kw], Keras [kh, kw, C, 1], "
             "Flax [kh, kw, 1, C]", "move it with transpose (2, 3, 0, 1) to Keras, (2, 3, 1, 0) to Flax, never "
             "a reshape", _alt_depthwise),
    NetEntry("group_order", "a grouped convolution with the wrong group order: channel c taken as group c % groups "
             "instead of c // (C / groups)", "split channels into contiguous groups (torch, Keras and Flax "
             "feature_group_count do)", _alt_groups),
    NetEntry("residual_before_attention", "the residual added before the attention block instead of after it",
             "apply the attention to the residual branch (after its last BatchNorm), then add the shortcut",
             _alt_residual),
    NetEntry("attention_missing", "the attention block is missing: the block's branch goes to the add unscaled",
             "apply the SE / ECA / CBAM block after the branch's last BatchNorm", _alt_no_attention),
    NetEntry("classifier_transposed", "the classifier's weight read transposed",
             "torch Linear [out, in] -> Keras/Flax kernel [in, out] is a transpose (W.T)", _alt_classifier),
    NetEntry("preprocessing", "the input preprocessing applied twice, or not at all",
             "apply the model's preprocessing once: inside the model (Keras applications) or before it, not both",
             _alt_preprocessing),
)
BN_MOMENTUM_ENTRY = NetEntry(
    "bn_momentum", "BatchNorm momentum in the other convention: torch's momentum m weighs the batch, Keras' and "
    "Flax's weigh the running average (Keras/Flax momentum = 1 - torch momentum)",
    "reference.layout.bn_momentum(0.1, 'keras' | 'flax') = 0.9", None)


def _block_alternatives(span):
    """[(entry, NetAlternative)] from the block catalogue for every attention block in the span."""
    from .verification import CATALOGUE

    out = []
    for method, name, d in span:
        if method != "attention":
            continue
        spec, p64 = d["spec"], d["params"]
        for entry in CATALOGUE:
            if entry.changes_shapes:
                continue
            for alt in entry.make(spec, p64, None):
                if alt.run is not None:
                    out.append((entry, NetAlternative(f"{name}: {alt.detail}" if alt.detail else name,
                                                      BlockAlternative([name], alt.run))))
    return out


# --------------------------------------------------------------------------- verify


@dataclass
class Observed:
    """One battery input: the candidate's stage outputs (channels-last, by stage) and logits, the oracle's."""

    x: np.ndarray                  # channels-last float64
    got: dict                      # stage -> array (candidate), "head" -> logits
    want: list                     # the oracle's stage outputs, in stage order


def _cl(a, df):
    a = np.asarray(a, dtype=np.float64)
    return a.transpose(0, 2, 3, 1) if df == "channels_first" and a.ndim == 4 else a


def _own_format(runner) -> str:
    """The data format the candidate itself runs in (not a clone rebuilt in the other one)."""
    return (runner.own_formats() or list(runner.layers))[0]


def request_taps(runner, spec, taps=None) -> dict:
    """`locate` the stages among the candidate's modules and ask ``runner`` to read them in its battery runs
    (one run per input gives the logits and every stage)."""
    df = _own_format(runner)
    layer = runner.layers[df]
    located = locate(runner.adapter.tap_names(layer), [s.name for s in reference.nets.stages(spec)], taps)
    runner.tap_request = tuple(sorted({n for n, _ in located.values()}))
    return located


def observe(runner, spec, p64, seed, located, oracle) -> tuple[list, list]:
    """The candidate's stage outputs as its battery runs read them (`request_taps`), channels-last, next to
    the oracle's (``oracle``: stage outputs by input name, filled where missing): ``(observed, notes)``."""
    from .verification import battery

    stages = reference.nets.stages(spec)
    df = _own_format(runner)
    observed, notes = [], []
    for case in battery(spec, seed):
        x_native = (case.x.transpose(0, 3, 1, 2) if df == "channels_first" else case.x).astype(runner.np_dtype)
        read = runner.tapped.get((df, x_native.shape, x_native.tobytes()))
        if read is None:  # the candidate raised on this input: the logits cases say so
            notes.append(f"intermediate outputs not read on {case.name}: the candidate failed there")
            continue
        seen, logits = read
        x = case.x.astype(runner.np_dtype).astype(np.float64)  # the input as the candidate got it
        if case.name not in oracle:
            oracle[case.name] = run_stages(stages, p64, x)
        got = {"head": np.asarray(logits, dtype=np.float64)}
        for stage, (name, end) in located.items():
            if name in seen:
                got[stage] = _cl(seen[name][0 if end == "input" else 1], df)
        observed.append(Observed(x, got, oracle[case.name]))
    missing = [s.name for s in stages if s.name != "head" and s.name not in located]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        notes.append(f"no module of the candidate matched {shown}: pass taps={{stage: module name}} to read them")
    return observed, notes


def stage_table(spec, dtype, observed, located) -> list[StageResult]:
    rows = []
    for i, stage in enumerate(reference.nets.stages(spec)):
        name = stage.name
        tap = "logits" if name == "head" else (located.get(name, (None,))[0])
        worst_a = worst_r = None
        rtol = atol = 0.0
        ok, error, read = True, None, False
        for obs in observed:
            if name not in obs.got:
                continue
            read = True
            want = obs.want[i]
            tol = reference.network_tolerance(spec, dtype, want)
            rtol, atol = tol.rtol, max(atol, tol.atol)
            got = obs.got[name]
            if got.shape != want.shape:
                ok, error = False, f"shape {list(got.shape)}, expected {list(want.shape)}"
                continue
            a, r = reference.errors(got, want)
            worst_a, worst_r = max(worst_a or 0.0, a), max(worst_r or 0.0, r)
            ok = ok and bool(np.all(np.isfinite(got))) and reference.within(got, want, tol)
        rows.append(StageResult(name, tap if read else None, worst_a, worst_r, rtol, atol, ok if read else None,
                                error))
    return rows


def _agrees(spec, stages, p64, observed, dtype, ops, start, stop) -> bool:
    """Whether the candidate's output at ``stages[stop - 1]`` equals the stages ``start..stop - 1`` run with
    ``ops`` from the oracle's input, on every input where it was read."""
    compared = 0
    for obs in observed:
        name = stages[stop - 1].name
        if name not in obs.got:
            continue
        x = obs.x if start == 0 else obs.want[start - 1]
        try:
            y = run_stages(stages, p64, x, ops, start, stop)[-1]
        except Exception:  # noqa: BLE001 - this alternative cannot take the input (a shape it breaks)
            return False
        got = obs.got[name]
        if got.shape != y.shape or not np.all(np.isfinite(got)):
            return False
        if not reference.within(got, y, reference.network_tolerance(spec, dtype, y)):
            return False
        compared += 1
    return compared > 0


def _first_failure(spec, stages, p64, observed, dtype, ops) -> str | None:
    """The first stage whose read output differs from the whole network run with ``ops``, or None."""
    runs = []
    for obs in observed:
        try:
            runs.append(run_stages(stages, p64, obs.x, ops))
        except Exception:  # noqa: BLE001 - the alternative cannot take this input: nothing is explained
            return stages[0].name
    for i, stage in enumerate(stages):
        for obs, outs in zip(observed, runs):
            got = obs.got.get(stage.name)
            if got is None:
                continue
            y = outs[i]
            if got.shape != y.shape or not reference.within(got, y, reference.network_tolerance(spec, dtype, y)):
                return stage.name
    return None


def diagnose(spec, p64, observed, rows, dtype):
    """``(diagnoses, findings)`` for the first diverging stage of ``rows`` (see the module doc)."""
    from .verification import Diagnosis

    stages = reference.nets.stages(spec)
    findings = NetworkFindings(stages=rows)
    fail = next((i for i, r in enumerate(rows) if r.passed is False), None)
    if fail is None or not observed:
        return [], findings
    findings.first_divergence = rows[fail].stage
    start = max((i + 1 for i, r in enumerate(rows[:fail]) if r.passed), default=0)
    findings.span = tuple(r.stage for r in rows[start:fail + 1])
    calls = inventory(stages, p64, observed[0].x[:1])  # which layers each stage calls: one image tells
    span = [c for s in findings.span for c in calls[s]]
    every = [c for s in stages for c in calls[s.name]]
    candidates = [(e, alt) for e in NET_CATALOGUE for alt in e.make(spec, span, every)] + _block_alternatives(span)
    named, chosen = [], None
    for entry, alt in candidates:
        if entry.name in {d.name for d in named}:
            continue
        if _agrees(spec, stages, p64, observed, dtype, alt.here, start, fail + 1):
            named.append(Diagnosis(entry.name, entry.explanation, entry.fix, alt.detail))
            chosen = chosen or alt
    if chosen is not None:
        again = _first_failure(spec, stages, p64, observed, dtype, chosen.here)
        if again is not None and chosen.everywhere is not None:
            if _first_failure(spec, stages, p64, observed, dtype, chosen.everywhere) is None:
                again = None
                named[0].detail += "; the same at every such layer explains the rest"
        findings.explains_all = again is None
        findings.diverges_again = again
    return named, findings


def check_training(runner, spec, seed) -> tuple[list, list]:
    """``(diagnoses, [(bn, momentum)])``: each BatchNorm's momentum (torch's convention) from its running
    mean over two training-mode forwards of one battery input; `BN_MOMENTUM_ENTRY` where it is
    ``1 - BN_MOMENTUM``. The candidate's variables are put back afterwards."""
    from .verification import Diagnosis, battery

    df = _own_format(runner)
    layer, a = runner.layers[df], runner.adapter
    names = {info.name: info for info in spec.param_table()}
    assigned = runner.assigned.get(df)
    if not assigned:  # a loader put the weights in: find the running means as verify's own mapping would
        from .verification import map_params

        plan = map_params(spec, runner.natives(layer), runner.framework, partial=True)
        assigned = [(info.name, native[0]) for info, native, _, _ in plan["assign"]]
    means = [(c, n) for c, n in assigned if names[c].kind == "bn_mean"]
    if not means:
        return [Diagnosis("training_not_checked", "no BatchNorm running mean of the candidate was found, so its "
                          "momentum was not checked", "give the BatchNorms' variables their canonical names "
                          "(docs/how-to/verify-a-network.md)")], []
    x = battery(spec, seed)[0].x
    x = (x.transpose(0, 3, 1, 2) if df == "channels_first" else x).astype(runner.np_dtype)
    before = runner.read(layer)
    history = [before]
    try:
        with a.scope(runner.np_dtype):
            for _ in range(2):
                a.run_training(layer, a.to_tensor(x))
                history.append(runner.read(layer))
    finally:
        with a.scope(runner.np_dtype):
            for name, _, put in runner.natives(layer):
                if name in before:
                    put(before[name])
    found = []
    for canonical, native in means:
        r0, r1, r2 = (np.asarray(h[native], dtype=np.float64) for h in history)
        step = r1 - r0
        use = np.abs(step) > 1e-6 * (1 + np.abs(r0))
        if not use.any():
            continue
        m = float(np.median(1.0 - (r2 - r1)[use] / step[use]))
        found.append((canonical.rsplit(".", 1)[0], m))
    expected = reference.nets.BN_MOMENTUM
    wrong = [(n, m) for n, m in found if abs(m - (1 - expected)) < 0.01]
    diags = []
    if wrong:
        e = BN_MOMENTUM_ENTRY
        shown = ", ".join(f"{n} {m:.3g}" for n, m in wrong[:4]) + (" ..." if len(wrong) > 4 else "")
        diags.append(Diagnosis(e.name, e.explanation, e.fix,
                               f"momentum {1 - expected:g} where the spec's is {expected:g} (torch's convention) "
                               f"at {len(wrong)} of {len(found)} BatchNorms: {shown}"))
    return diags, found
