"""CBAM's BatchNorm in training mode: batch statistics and one running-statistics update,
the same in every backend and in the reference (torch's rule, momentum converted exactly)."""
import numpy as np
import pytest

import reference

from helpers import BACKEND_NAMES, get_bridge, make_input

SPECS = [reference.CBAM.official(24), reference.CBAM.timm(24)]  # momentum 0.01 and 0.1


def train_step(backend, module, x):
    """One training-mode forward in the backend's own idiom; returns the output, channels-last."""
    if backend == "torch":
        import torch
        module.train()
        with torch.no_grad():
            y = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
        module.eval()
        return y
    if backend == "tf":
        return np.asarray(module(x, training=True))
    module.train()
    y = np.asarray(module(x))
    module.eval()
    return y


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("spec", SPECS, ids=["official", "timm"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_mode_bn_matches_the_reference(backend, spec, dtype):
    bridge = get_bridge(backend)
    params = spec.init_params(seed=5, dtype=dtype)
    module = bridge.load_params(bridge.build(spec, dtype=dtype), params)
    x = make_input(spec, 3, (6, 5), dtype, seed=9)
    if backend == "jax":
        with get_bridge("jax").x64_scope(dtype):
            y = train_step(backend, module, x)
    else:
        y = train_step(backend, module, x)
    y_ref, new_ref = reference.train_forward(spec, params, x)
    tol = reference.tolerance(dtype)
    reference.assert_within(y, y_ref, tol, what=f"{backend} training output")
    exported = bridge.export_params(module)
    for name in ("bn.running_mean", "bn.running_var"):
        assert not np.array_equal(exported[name], params[name]), f"{name} was not updated"
        reference.assert_within(exported[name], new_ref[name], tol, what=f"{backend} {name}")
    for name in ("bn.weight", "bn.bias", "fc1.weight", "conv.weight"):
        assert np.array_equal(exported[name], params[name]), f"a forward pass changed {name}"
    # back in inference mode the running statistics are used: output differs from training mode
    assert not reference.within(bridge.apply(module, x), y_ref, tol)


def test_running_var_update_is_unbiased_and_momentum_is_torchs():
    """Independent check of the rule on a tiny hand-made map (not through forward's code path)."""
    z = np.array([1.0, 2.0, 4.0, 5.0])  # mean 3, biased var 2.5, unbiased var 10/3
    mean, var, unbiased = reference.cbam.bn_batch_statistics(z)
    assert (mean, var) == (3.0, 2.5) and unbiased == pytest.approx(10 / 3, rel=1e-15)
    with pytest.raises(ValueError, match="more than one value per channel"):
        reference.cbam.bn_batch_statistics(np.array([[[1.0]]]))


def test_training_outputs_differ_from_inference_outputs():
    spec = SPECS[0]
    params = spec.init_params(seed=5, dtype=np.float64)
    x = make_input(spec, 3, (6, 5), "float64", seed=9)
    y_train, _ = reference.train_forward(spec, params, x)
    assert not reference.within(y_train, reference.forward(spec, params, x), reference.tolerance("float64"))
