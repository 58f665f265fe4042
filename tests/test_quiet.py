"""attnport.quiet: the frameworks' known start-up lines are dropped, anything else written back."""
import os
import sys

from attnport import quiet

# lines as TensorFlow 2.21, torch 2.14's kineto and inductor print them on a CPU machine
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796206827.829865    4107 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796206827.830385    4107 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796206832.085803    4107 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "USDT:2026-12-02 10:19:18 3237:3237 SyncActivityProfilerHandler.cpp:46] profiler_stop",
    "USDT:2026-12-02 10:19:18 3237:3237 SyncActivityProfilerHandler.cpp:39] profiler_start",
    "ERROR:2026-12-02 10:19:17 3237:3237 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35",
]
REAL = [
    "E0000 00:00:1796206832.085803    4107 some_kernel.cc:52] INVALID_ARGUMENT: shapes do not match",
    "ERROR:2026-12-02 10:19:17 3237:3237 CuptiActivityProfiler.cpp:10] a real kineto error",
    "Traceback (most recent call last):",
    "USDT:2026-12-02 10:19:18 3237:3237 SyncActivityProfilerHandler.cpp:46] profiler_stop and more",
]


def test_known_lines_are_noise_and_others_are_not():
    assert all(quiet.is_noise(line + "\n") for line in NOISE)
    assert not any(quiet.is_noise(line) for line in REAL)


def test_filtered_stderr_drops_the_noise_and_writes_back_the_rest(capfd):
    with quiet.filtered_stderr():
        os.write(2, ("\n".join(NOISE + REAL) + "\n").encode())
        print("from python", file=sys.stderr)
    err = capfd.readouterr().err.splitlines()
    assert sorted(err) == sorted(REAL + ["from python"])


def test_environment_keeps_a_value_already_set(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    quiet.environment()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"  # INFO and WARNING dropped, ERROR kept
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    quiet.environment()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_loading_a_backend_prints_no_framework_chatter():
    """`attnport.backends.load` (what every command uses) imports TensorFlow and JAX with their start-up
    chatter held back: a fresh process that loads every backend writes nothing to stderr."""
    import subprocess
    import sys

    from attnport import backends

    names = [n for n in backends.BACKENDS if backends.installed(n)]
    code = ("from attnport import backends\n"
            f"for name in {names!r}:\n"
            "    backends.adapter(name)\n"
            "print('loaded', sorted(__import__('sys').modules.keys() & {'torch', 'tensorflow', 'jax'}))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("loaded"), done.stdout
    assert done.stderr == "", done.stderr
