"""`tf_impl` is written with ``keras.ops``, so its layers run on every Keras 3 backend.

Keras picks its backend once, at import, from KERAS_BACKEND; so each backend runs in its own
subprocess (tests/keras_backend_probe.py). The parent writes the inputs, the child builds each layer,
loads ``spec.init_params`` with ``tf_impl.load_params`` and applies it eagerly and through
``model.predict`` (jit-compiled on the JAX backend), in both data formats; the parent then compares
every output with the float64 oracle using ``reference.tolerance("float32")``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference
from attnport import cases

from helpers import get_bridge, make_input

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).with_name("keras_backend_probe.py")
# Keras backend -> the attnport backend whose framework it needs (get_bridge skips when it is missing).
KERAS_BACKENDS = {"tensorflow": "tf", "jax": "jax", "torch": "torch"}
NATIVE_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
SEED = 7
TIMEOUT_S = 180  # a hard cap; a run takes ~10-20 s

SPECS = [
    reference.SE(24),                                                                 # the article
    reference.SE(16, activation="hard_swish", gate="hard_sigmoid_keras2"),
    reference.SE(16, activation="gelu"),                                              # erf through keras.ops
    reference.SE(16, activation="gelu_tanh", gate="hard_sigmoid_keras2", bias=False),
    reference.SE.efficientnet(96, in_channels=16),                                    # silu
    reference.SE.mobilenetv3(72),                                                     # hard_sigmoid
    reference.ECA(512),
    reference.ECA(7, kernel_size=7),                                                  # kernel wider than C
    reference.ECA.circular(128),                                                      # circular padding
    reference.ECA(3, kernel_size=9, padding_mode="circular"),                         # wraps more than once
    reference.CBAM.official(40),
    reference.CBAM.timm(40),
    reference.CBAM(8, ratio=2, spatial_kernel=3, spatial_norm=False, gate="hard_sigmoid"),
]
SHAPE = {"channels_last": (3, (7, 7)), "channels_first": (2, (2, 5))}


def _cases():
    out = []
    for i, spec in enumerate(SPECS):
        for data_format in reference.DATA_FORMATS:
            n, hw = SHAPE[data_format]
            x = make_input(spec, n, hw, "float32", data_format, seed=i)
            out.append((f"{cases.spec_id(spec)}|{data_format}", spec, data_format, x))
    return out


def test_probe_specs_are_cases_and_cover_each_family():
    assert all(s in cases.SPECS for s in SPECS)
    assert {"se", "eca", "cbam"} == {s.kind for s in SPECS}
    assert {"zeros", "circular"} == {s.padding_mode for s in SPECS if s.kind == "eca"}
    assert reference.CBAM.official(40) in SPECS and reference.CBAM.timm(40) in SPECS


def _start_probe(keras_backend, workdir, case_list):
    request, inputs, outputs = workdir / "request.json", workdir / "inputs.npz", workdir / "outputs.npz"
    request.write_text(json.dumps({"seed": SEED, "cases": [
        {"key": key, "spec_id": cases.spec_id(spec), "data_format": df} for key, spec, df, _ in case_list]}))
    np.savez(inputs, **{key: x for key, _, _, x in case_list})
    env = dict(os.environ, KERAS_BACKEND=keras_backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, str(PROBE), str(request), str(inputs), str(outputs)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, outputs


def _finish_probe(keras_backend, proc, outputs):
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"KERAS_BACKEND={keras_backend}: probe ran over {TIMEOUT_S} s") from e
    assert proc.returncode == 0, f"KERAS_BACKEND={keras_backend}: probe failed\n{stderr[-4000:]}"
    summary = json.loads(stdout.strip().splitlines()[-1])
    with np.load(outputs) as f:
        return summary, {k: f[k] for k in f.files}


@pytest.mark.parametrize("keras_backend", list(KERAS_BACKENDS))
def test_keras_layers_match_oracle_on_backend(keras_backend, tmp_path):
    pytest.importorskip("keras", reason="keras is not installed")
    get_bridge(KERAS_BACKENDS[keras_backend])  # skips only when the backend's framework is missing
    case_list = _cases()
    summary, outputs = _finish_probe(keras_backend, *_start_probe(keras_backend, tmp_path, case_list))

    assert summary["requested_backend"] == keras_backend
    assert summary["keras_backend"] == keras_backend
    assert summary["keras_version"].split(".")[0] == "3"
    assert Path(summary["reference_file"]).resolve().is_relative_to(ROOT)
    assert not summary["errors"], "\n".join(f"{k}:\n{v}" for k, v in summary["errors"].items())
    # importing tf_impl pulls in no TensorFlow that Keras itself did not (none at all on jax / torch)
    assert summary["tensorflow_imported_after_tf_impl"] == summary["tensorflow_imported_by_keras"]
    if keras_backend != "tensorflow":
        assert not summary["tensorflow_imported_after_eager_calls"]

    assert set(summary["results"]) == {key for key, *_ in case_list}
    tol = reference.tolerance("float32")
    for key, spec, data_format, x in case_list:
        info = summary["results"][key]
        assert info["output_type"].startswith(NATIVE_MODULE[keras_backend]), info  # jaxlib for jax
        assert info["variable_type"].startswith(NATIVE_MODULE[keras_backend]), info
        if keras_backend == "jax":
            assert info["model_jit_compile"] is True, info  # predict ran as one jax.jit-compiled function
        expected = reference.forward(spec, spec.init_params(seed=SEED), x, data_format)
        for path in ("eager", "predict"):
            y = outputs[f"{key}|{path}"]
            assert y.dtype == np.float32, f"{key} {path}: dtype {y.dtype}"
            reference.assert_within(y, expected, tol, what=f"KERAS_BACKEND={keras_backend} {key} {path}")
