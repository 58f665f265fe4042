"""Test configuration. A test may skip only when an optional framework is missing."""
import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Under pytest-xdist each worker gets one compute thread per framework. README's command runs two
# workers on two cores; with every framework's default pool (one thread per core, spin-waiting at each
# barrier) the workers' pools contend, and a float64 network test that takes 0.3 s alone took 140 s in CI.
if "PYTEST_XDIST_WORKER" in os.environ:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

# torch's CUDA builds ship triton, which torch.compile imports lazily. Loading libtriton after
# TensorFlow segfaults the process (their bundled LLVMs clash); loading it first is safe.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401

