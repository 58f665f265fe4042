"""Run the `tf_impl` Keras layers under whatever KERAS_BACKEND the environment selects.

Used by tests/test_keras_backends.py, one subprocess per Keras backend (the backend must be chosen
before keras is imported). Not a test module itself.

    KERAS_BACKEND=jax python tests/keras_backend_probe.py REQUEST.json INPUTS.npz OUTPUTS.npz

REQUEST.json: {"cases": [{"key": ..., "spec_id": ..., "data_format": ...}, ...], "seed": int}; every
spec_id names a spec of the shared case list (`attnport.cases.SPECS`), its weights are
``spec.init_params(seed)``, loaded with ``tf_impl.load_params``. INPUTS.npz holds the input under each
key. For each case the layer is applied directly (``layer(x)``, eager) and inside a functional model
(``model.predict``, which the JAX backend jit-compiles); the outputs go to OUTPUTS.npz under
``key + "|eager"`` and ``key + "|predict"``. Prints one JSON line with what ran where; the caller
compares the outputs with the float64 oracle itself.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback


def main(request_path: str, inputs_path: str, outputs_path: str) -> dict:
    started = time.perf_counter()
    requested = os.environ.get("KERAS_BACKEND")
    import numpy as np

    import keras
    tf_before = "tensorflow" in sys.modules
    import reference
    import tf_impl
    from attnport import backends, cases
    tf_after = "tensorflow" in sys.modules
    backends.strict_numerics()

    request = json.loads(open(request_path).read())
    by_id = {cases.spec_id(s): s for s in cases.SPECS}
    inputs = np.load(inputs_path)
    outputs, results, errors, layers = {}, {}, {}, {}
    for case in request["cases"]:  # eager first, so a TensorFlow import here would be the layers' doing
        key, data_format = case["key"], case["data_format"]
        try:
            spec = by_id[case["spec_id"]]
            layer = tf_impl.load_params(tf_impl.build(spec, data_format=data_format),
                                        spec.init_params(seed=request["seed"]))
            native = layer(keras.ops.convert_to_tensor(inputs[key]))
            outputs[key + "|eager"] = np.asarray(keras.ops.convert_to_numpy(native))
            results[key] = {"output_type": f"{type(native).__module__}.{type(native).__qualname__}",
                            "variable_type": type(layer.trainable_weights[0].value).__module__}
            layers[key] = layer
        except Exception:  # reported, and the caller fails on it
            errors[key] = traceback.format_exc(limit=20)
    tf_after_eager = "tensorflow" in sys.modules
    for key, layer in layers.items():
        try:
            x = inputs[key]
            model_input = keras.Input(x.shape[1:], dtype=str(x.dtype))
            model = keras.Model(model_input, layer(model_input))
            outputs[key + "|predict"] = np.asarray(model.predict(x, batch_size=x.shape[0], verbose=0))
            results[key]["model_jit_compile"] = bool(model.jit_compile)
        except Exception:
            errors[key + "|predict"] = traceback.format_exc(limit=20)
    np.savez(outputs_path, **outputs)
    return {
        "requested_backend": requested,
        "keras_backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "tensorflow_imported_by_keras": tf_before,
        "tensorflow_imported_after_tf_impl": tf_after,
        "tensorflow_imported_after_eager_calls": tf_after_eager,
        "results": results,
        "errors": errors,
        "seconds": round(time.perf_counter() - started, 2),
        "reference_file": reference.__file__,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
