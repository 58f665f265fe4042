"""Hostile weight files (docs/how-to/convert-a-checkpoint.md "Checkpoint files" and its "Resource bounds"): every reader refuses
what it cannot read safely with an error naming the file and the offending key, and the CLI exits 2
with that message and nothing written.

HDF5 external storage, virtual datasets and links; sizes a file cannot hold; zip and filter bombs;
torch refusals, unsupported tensors and non-string keys; non-regular files; NaN/Inf weights;
signals during a write.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import attnport
import reference
from attnport import checkpoint as ckpt
from attnport import cli, limits
from attnport.checkpoint import CheckpointError, NonFiniteWarning
from attnport.files import BadInput, read_weights

from helpers import run_in_process as run_main

REPO = Path(__file__).resolve().parents[1]
SECRET = b"TOPSECRET-" * 9  # what a hostile file tries to pull into its reader


@pytest.fixture()
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


# --------------------------------------------------------------------------- HDF5

def se_block_h5(path, extra=None):
    """A keras-applications SE block (block2a, C=16, R=4) in an .h5 file; ``extra(f)`` adds the rest."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["block2a_se_reduce/kernel"] = rng.standard_normal((1, 1, 16, 4)).astype("f4")
        f["block2a_se_reduce/bias"] = np.zeros(4, "f4")
        f["block2a_se_expand/kernel"] = rng.standard_normal((1, 1, 4, 16)).astype("f4")
        f["block2a_se_expand/bias"] = np.zeros(16, "f4")
        if extra:
            extra(f)
    return path


GROUPS = ["", "stem/", "a/b/c/d/"]


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("target", ["secret", "/dev/zero"])
def test_h5_external_storage_is_refused_in_any_group(tmp_path, secret, group, target):
    pytest.importorskip("h5py")
    where = str(secret) if target == "secret" else target
    path = se_block_h5(tmp_path / "w.h5", lambda f: f.create_dataset(
        f"{group}leak", shape=(len(SECRET),), dtype="u1", external=[(where, 0, len(SECRET))]))
    with pytest.raises(BadInput) as info:
        read_weights(path)
    message = str(info.value)
    assert str(path) in message and f"{group}leak: external storage in {where}" in message


@pytest.mark.parametrize("group", GROUPS)
def test_h5_external_storage_never_reaches_the_output(tmp_path, secret, capsys, group):
    """The attack: --keep-rest copied the external file's bytes into the converted output, exit 0."""
    pytest.importorskip("h5py")
    path = se_block_h5(tmp_path / "w.h5", lambda f: f.create_dataset(
        f"{group}leak", shape=(len(SECRET),), dtype="u1", external=[(str(secret), 0, len(SECRET))]))
    out = tmp_path / "out.safetensors"
    code, stdout, stderr = run_main(capsys, "convert", path, out, "--from", "keras-applications",
                                    "--to", "keras-applications", "--keep-rest")
    assert code == 2 and f"{group}leak: external storage" in stderr and "Traceback" not in stderr
    assert sorted(os.listdir(tmp_path)) == ["secret.txt", "w.h5"]


@pytest.mark.parametrize("group", GROUPS)
def test_h5_virtual_dataset_is_refused(tmp_path, secret, group):
    h5py = pytest.importorskip("h5py")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["hidden"] = np.frombuffer(SECRET, "u1")

    def virtual(f):
        layout = h5py.VirtualLayout(shape=(len(SECRET),), dtype="u1")
        layout[:] = h5py.VirtualSource(str(other), "hidden", shape=(len(SECRET),))
        f.create_virtual_dataset(f"{group}vds", layout)

    path = se_block_h5(tmp_path / "w.h5", virtual)
    with pytest.raises(BadInput, match=rf"{group}vds: a virtual dataset \(VDS\)"):
        read_weights(path)


def test_h5_links_are_refused_and_listed(tmp_path):
    h5py = pytest.importorskip("h5py")

    def links(f):
        f["stem/soft"] = h5py.SoftLink("/block2a_se_reduce/bias")
        f["top_soft"] = h5py.SoftLink("/nowhere")
        f["a/b/ext"] = h5py.ExternalLink("/etc/some.h5", "/x")

    path = se_block_h5(tmp_path / "w.h5", links)
    with pytest.raises(BadInput) as info:
        read_weights(path)
    message = str(info.value)
    for line in ("stem/soft: a soft link to /block2a_se_reduce/bias", "top_soft: a soft link to /nowhere",
                 "a/b/ext: an external link to /etc/some.h5:/x"):
        assert line in message


@pytest.mark.parametrize("shape, chunks", [((2**32,), (2**20,)), ((2**28,), None), ((2**16, 2**16), (256, 256))])
def test_h5_stated_size_beyond_the_file_is_refused(tmp_path, shape, chunks):
    """A tiny file stating GiBs (never written: HDF5 would read them as the fill value)."""
    pytest.importorskip("h5py")
    path = se_block_h5(tmp_path / "w.h5", lambda f: f.create_dataset("g/huge", shape=shape, dtype="f4",
                                                                      chunks=chunks))
    stated = int(np.prod(shape)) * 4
    with pytest.raises(BadInput) as info:
        read_weights(path)
    assert f"g/huge: states {stated:,} bytes but the file holds {path.stat().st_size:,}" in str(info.value)


def test_h5_datasets_together_beyond_the_file_are_refused(tmp_path):
    pytest.importorskip("h5py")

    def many(f):
        for i in range(8):
            f.create_dataset(f"part{i}", shape=(900,), dtype="f8")  # 7,200 bytes each, never written

    path = se_block_h5(tmp_path / "w.h5", many)
    size = path.stat().st_size
    assert 7200 < size < 8 * 7200  # each fits the file alone, together they do not
    with pytest.raises(BadInput, match=rf"together state [\d,]+ bytes but the file holds {size:,}"):
        read_weights(path)


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_h5_decompression_is_capped(tmp_path, compression):
    pytest.importorskip("h5py")
    n = 4 * 2**20  # 16 MiB of float32 zeros compress to a few kB
    path = se_block_h5(tmp_path / "w.h5", lambda f: f.create_dataset(
        "bomb", data=np.zeros(n, "f4"), chunks=(2**18,), compression=compression))
    size = path.stat().st_size
    assert 4 * n > limits.MAX_EXPANSION * size
    with pytest.raises(BadInput) as info:
        read_weights(path)
    assert (f"bomb: decompresses to {4 * n:,} bytes, more than {limits.MAX_EXPANSION}x the file's {size:,}"
            in str(info.value))


def test_h5_compressed_weights_within_the_bound_are_read(tmp_path):
    pytest.importorskip("h5py")
    data = np.random.default_rng(1).standard_normal(5000).astype("f4")
    path = se_block_h5(tmp_path / "w.h5", lambda f: f.create_dataset("w", data=data, compression="gzip",
                                                                      shuffle=True, fletcher32=True))
    tensors, _ = read_weights(path)
    np.testing.assert_array_equal(tensors["w"], data)


def test_h5_unknown_filter_is_refused(tmp_path):
    """Filters outside HDF5's built-ins (and h5py's lzf) would load a plugin library."""
    pytest.importorskip("h5py")
    path = se_block_h5(tmp_path / "w.h5", lambda f: f.create_dataset(
        "blosc", shape=(16,), dtype="f4", chunks=(16,), compression=32001, allow_unknown_filter=True))
    with pytest.raises(BadInput, match=r"blosc: filter 32001 is not one of HDF5's built-in filters"):
        read_weights(path)


@pytest.mark.parametrize("dtype", ["S5", "O", [("a", "f4"), ("b", "i4")], "c8"])
def test_h5_non_numeric_datasets_are_refused(tmp_path, dtype):
    h5py = pytest.importorskip("h5py")
    np_dtype = h5py.string_dtype() if dtype == "O" else np.dtype(dtype)
    path = se_block_h5(tmp_path / "w.h5", lambda f: f.create_dataset("odd/thing", shape=(2,), dtype=np_dtype))
    with pytest.raises(BadInput, match=r"odd/thing: dtype .* is not a numeric tensor"):
        read_weights(path)


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i8", ">f2", "<f4"])
def test_h5_any_byte_order_is_read_in_native_order(tmp_path, dtype):
    pytest.importorskip("h5py")
    data = np.arange(-3, 9).reshape(3, 4).astype(dtype)
    path = se_block_h5(tmp_path / "w.h5", lambda f: f.create_dataset("x", data=data))
    got = read_weights(path)[0]["x"]
    assert got.dtype.isnative and got.dtype == data.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, data)


def test_h5_hard_link_cycle_terminates(tmp_path):
    pytest.importorskip("h5py")

    def cycle(f):
        f["loop/back"] = f["/"]
        f["loop/again"] = f["loop"]

    tensors, _ = read_weights(se_block_h5(tmp_path / "w.h5", cycle))
    assert "block2a_se_reduce/kernel" in tensors


def test_keras_model_files_are_checked_before_loading(tmp_path, secret):
    """--keras-model loads the file into a model; the same refusals apply first."""
    pytest.importorskip("h5py")
    path = se_block_h5(tmp_path / "b0.weights.h5", lambda f: f.create_dataset(
        "layers/dense/vars/0", shape=(len(SECRET),), dtype="u1", external=[(str(secret), 0, len(SECRET))]))
    with pytest.raises(BadInput, match=r"layers/dense/vars/0: external storage"):
        read_weights(path, keras_model="EfficientNetB0")


# --------------------------------------------------------------------------- torch

def _rezip_deflated(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))


def test_torch_zip_decompression_is_capped(tmp_path):
    torch = pytest.importorskip("torch")
    stored = tmp_path / "stored.pt"
    torch.save({"w": torch.zeros(4 * 2**20)}, stored)  # 16 MiB of zeros
    bomb = tmp_path / "bomb.pt"
    _rezip_deflated(stored, bomb)
    size = bomb.stat().st_size
    with zipfile.ZipFile(bomb) as z:
        total = sum(i.file_size for i in z.infolist())
    assert total > limits.MAX_EXPANSION * size  # torch.load itself would read it
    with pytest.raises(BadInput) as info:
        read_weights(bomb)
    assert (f"{bomb}: the zip archive decompresses to {total:,} bytes, more than {limits.MAX_EXPANSION}x "
            f"the file's {size:,}") in str(info.value)
    assert read_weights(stored)[0]["w"].shape == (4 * 2**20,)  # the same data, stored as torch writes it


def test_torch_deflated_zip_within_the_bound_is_read(tmp_path):
    torch = pytest.importorskip("torch")
    stored, deflated = tmp_path / "stored.pt", tmp_path / "deflated.pt"
    w = torch.randn(64, 8)
    torch.save({"w": w}, stored)
    _rezip_deflated(stored, deflated)
    np.testing.assert_array_equal(read_weights(deflated)[0]["w"], w.numpy())


def test_torch_legacy_file_stating_more_than_it_holds_is_refused(tmp_path):
    """torch < 1.6's format (official ECA/CBAM checkpoints use it) states each storage's size in the
    pickle: 8 GiB in a 400-byte file is refused without being allocated."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(4)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    at = data.index(b"K\x04", data.index(b"cpu"))  # the storage's element count, BININT1 4
    path.write_bytes(data[:at] + b"J" + (2**31 - 1).to_bytes(4, "little") + data[at + 2:])  # BININT 2**31 - 1
    with pytest.raises(BadInput, match=rf"{re.escape(str(path))}: refused to load: not a weights-only torch file"):
        read_weights(path)


class _Global:
    """Unpickling this calls ``func(*args)``: a global that weights-only loading must block."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func", [os.system, exec, subprocess.check_output, Path], ids=lambda f: f.__name__)
def test_torch_refusal_names_the_blocked_global(tmp_path, capsys, func):
    """The global as the pickle names it (its module as torch spells it: posix.system, commands.check_output)."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Global(func, f"touch {marker}")}, path)
    with pytest.raises(BadInput) as info:
        read_weights(path)
    message = str(info.value)
    name = re.search(rf"blocked global ([\w.]*\b{func.__name__})\b", message).group(1)
    assert message.startswith(f"{path}: refused to load: not a weights-only torch file: it holds pickled Python "
                              f"objects beyond tensors (blocked global {name}), and attnport never unpickles those, "
                              "since unpickling can run any code; ")
    _assert_says_what_to_do(message)
    code, _, stderr = run_main(capsys, "inspect", path, "--from", "timm")
    assert code == 2 and f"blocked global {name}" in stderr and "\x1b" not in stderr
    assert not marker.exists()


def _assert_says_what_to_do(message: str) -> None:
    """A torch refusal ends with the way out, on one line, without torch's advice to load the file unsafely."""
    assert message.endswith("if you trust the file, load it in your own code and save its weights alone: "
                            "torch.save(model.state_dict(), PATH) or safetensors.torch.save_file(model.state_dict(), "
                            "PATH)")
    assert "weights_only" not in message and "safe_globals" not in message and "Unsupported operand" not in message
    assert "\x1b" not in message and "\n" not in message


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("protocol", [0, 1, 4, 5])
def test_torch_refusal_of_a_pickle_protocol_says_so_in_words(tmp_path, capsys, protocol, legacy):
    """Tensors alone, pickled with a protocol torch's weights-only reader does not read: refused with the
    protocol named (protocols 0 and 1 write no marker), never as torch's "Unsupported operand N"."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(2)}, path, pickle_protocol=protocol, _use_new_zipfile_serialization=not legacy)
    shown = "0 or 1" if protocol < 2 else str(protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own "Detected pickle protocol" warning stays inside
        with pytest.raises(BadInput) as info:
            read_weights(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load: not a weights-only torch file: it was pickled with protocol "
                              f"{shown}, which torch's weights-only reader does not read (torch.save writes protocol "
                              "2), and attnport never runs the full unpickler, since unpickling can run any code; ")
    _assert_says_what_to_do(message)
    code, out, err = run_main(capsys, "inspect", path, "--from", "timm")
    assert code == 2 and out == "" and err == f"attnport: {message}\n"


def test_torch_refusal_of_an_unreadable_protocol_2_pickle_says_so_in_words(tmp_path):
    """A protocol 2 pickle with an instruction torch does not accept (DUP) is not a weights-only file."""
    pytest.importorskip("torch")
    path = tmp_path / "odd.pt"
    path.write_bytes(b"\x80\x02K\x012.")  # PROTO 2, BININT1 1, DUP, STOP
    with pytest.raises(BadInput) as info:
        read_weights(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load: not a weights-only torch file: its pickle holds "
                              "instructions torch's weights-only reader does not accept, for Python objects beyond "
                              "tensors, and attnport never unpickles those, since unpickling can run any code; ")
    _assert_says_what_to_do(message)


def _unsupported_tensors():
    torch = pytest.importorskip("torch")
    return {
        "float8_e4m3fn": torch.zeros(3).to(torch.float8_e4m3fn),
        "float8_e5m2": torch.zeros(3).to(torch.float8_e5m2),
        "complex64": torch.zeros(3, dtype=torch.complex64),
        "complex128": torch.zeros(3, dtype=torch.complex128),
        "quantized": torch.quantize_per_tensor(torch.zeros(3), 0.1, 0, torch.qint8),
        "sparse_coo": torch.zeros(3, 3).to_sparse(),
        "sparse_csr": torch.eye(3).to_sparse_csr(),
        "meta": torch.empty(3, device="meta"),
    }


@pytest.mark.parametrize("kind", ["float8_e4m3fn", "float8_e5m2", "complex64", "complex128", "quantized",
                                  "sparse_coo", "sparse_csr", "meta"])
def test_torch_unsupported_tensors_are_refused_by_key(tmp_path, capsys, kind):
    torch = pytest.importorskip("torch")
    path = tmp_path / "sd.pth"
    torch.save({"layer1.0.se.fc1.weight": torch.zeros(4, 16), f"blocks.{kind}.weight": _unsupported_tensors()[kind]},
               path)
    with pytest.raises(BadInput) as info:
        read_weights(path)
    message = str(info.value)
    assert str(path) in message and f"blocks.{kind}.weight" in message
    assert (kind.split("_")[0] if kind != "quantized" else "quantized") in message
    assert "layer1.0.se.fc1.weight" not in message
    code, _, stderr = run_main(capsys, "inspect", path, "--from", "timm")
    assert code == 2 and f"blocks.{kind}.weight" in stderr


@pytest.mark.parametrize("key", [1, None, ("a", "b"), 2.5, b"bytes"])
def test_torch_non_string_keys_are_named(tmp_path, capsys, key):
    torch = pytest.importorskip("torch")
    path = tmp_path / "sd.pt"
    torch.save({"fine": torch.zeros(2), key: torch.zeros(2)}, path)
    with pytest.raises(BadInput) as info:
        read_weights(path)
    assert f"key {key!r} is a {type(key).__name__}, not a string" in str(info.value)
    code, _, stderr = run_main(capsys, "inspect", path, "--from", "timm")
    assert code == 2 and f"key {key!r}" in stderr


@pytest.mark.parametrize("value, kind", [({"w": 1}, "dict"), (3, "int"), ("text", "str"), ([1, 2], "list")])
def test_torch_non_tensor_values_are_named_by_key(tmp_path, value, kind):
    torch = pytest.importorskip("torch")
    path = tmp_path / "sd.pt"
    torch.save({"fc.weight": torch.zeros(2), "optim.state": value}, path)
    with pytest.raises(BadInput, match=rf"optim\.state: holds a {kind}, not a tensor"):
        read_weights(path)


def test_torch_training_checkpoint_wrapper_is_still_read(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"fc.weight": torch.ones(2)}, "epoch": 3}, path)
    assert list(read_weights(path)[0]) == ["fc.weight"]


# --------------------------------------------------------------------------- non-regular files

def _make(kind: str, path: Path):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        return s
    elif kind.startswith("/dev/"):
        path.symlink_to(kind)
    return None


KINDS = {"fifo": "a FIFO", "directory": "a directory", "socket": "a socket",
         "/dev/null": "a character device (a symbolic link to /dev/null)"}


@pytest.fixture()
def fifo_watchdog(tmp_path):
    """Opens any FIFO under tmp_path for writing once a reader blocks on it, so a broken reader fails
    instead of hanging the suite."""
    stop = threading.Event()

    def unblock():
        while not stop.wait(0.2):
            for p in tmp_path.iterdir():
                if p.is_fifo():
                    try:
                        os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
                    except OSError:
                        pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


READERS = {
    "attnport.load": lambda p: attnport.load(p),
    "attnport.read_tensors": lambda p: attnport.read_tensors(p),
    "read_weights": lambda p: read_weights(p),
    "read_weights --keras-model": lambda p: read_weights(p, keras_model="EfficientNetB0"),
}
SUFFIXES = {"attnport.load": [".safetensors"], "attnport.read_tensors": [".safetensors"],
            "read_weights": [".safetensors", ".pt", ".h5"], "read_weights --keras-model": [".weights.h5"]}


@pytest.mark.parametrize("reader, suffix", [(r, s) for r, suffixes in SUFFIXES.items() for s in suffixes])
@pytest.mark.parametrize("kind", list(KINDS))
def test_non_regular_files_are_refused_by_kind(tmp_path, fifo_watchdog, reader, suffix, kind):
    path = tmp_path / f"w{suffix}"
    held = _make(kind, path)
    try:
        with pytest.raises((CheckpointError, BadInput)) as info:
            READERS[reader](path)
    finally:
        if held:
            held.close()
    message = str(info.value)
    assert message.startswith(f"{path}: ") and f"is {KINDS[kind]}, not a regular file" in message
    assert "no such file" not in message.lower()


@pytest.mark.parametrize("kind", list(KINDS))
def test_cli_refuses_non_regular_files(tmp_path, fifo_watchdog, capsys, kind):
    path = tmp_path / "w.safetensors"
    held = _make(kind, path)
    try:
        code, _, stderr = run_main(capsys, "inspect", path)
    finally:
        if held:
            held.close()
    assert code == 2 and f"is {KINDS[kind]}, not a regular file" in stderr


def test_missing_file_is_still_no_such_file(tmp_path):
    for reader in (attnport.load, read_weights):
        with pytest.raises((CheckpointError, BadInput), match=r"w\.safetensors: no such file"):
            reader(tmp_path / "w.safetensors")


def test_symlink_to_dev_zero_is_refused_without_reading(tmp_path):
    """In a subprocess with a 2 GiB data limit: a reader that reads /dev/zero fails there, not here."""
    for suffix in (".safetensors", ".pt", ".h5", ".weights.h5"):
        (tmp_path / f"zero{suffix}").symlink_to("/dev/zero")
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))
        import attnport
        from attnport.files import read_weights
        d = {str(tmp_path)!r}
        calls = [("load", lambda: attnport.load(d + "/zero.safetensors"))]
        calls += [(s, lambda s=s: read_weights(d + "/zero" + s)) for s in (".safetensors", ".pt", ".h5")]
        calls += [("keras", lambda: read_weights(d + "/zero.weights.h5", keras_model="EfficientNetB0"))]
        out = {{}}
        for name, call in calls:
            try:
                call()
                out[name] = "read"
            except Exception as exc:
                out[name] = type(exc).__name__ + ": " + str(exc)
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    for name, message in json.loads(done.stdout).items():
        assert message.split(":")[0] in ("CheckpointError", "BadInput"), (name, message)
        assert "is a character device (a symbolic link to /dev/zero), not a regular file" in message, name


# --------------------------------------------------------------------------- NaN and Inf

def _poisoned():
    """A bundle with NaN/Inf at known places: {key: (nan count, inf count)} as placed here."""
    spec = reference.SE(8, ratio=2)
    params = spec.init_params(dtype=np.float32)
    params["fc1.weight"][0, :3] = np.nan
    params["fc1.weight"][1, 0] = np.inf
    params["fc2.bias"][2] = -np.inf
    return {"blk": (spec, params)}, {"blk.fc1.weight": (3, 1), "blk.fc2.bias": (0, 1)}


def _save_as(path: Path, tensors: dict[str, np.ndarray]) -> None:
    if path.suffix == ".pt":
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            for k, v in tensors.items():
                f[k] = v


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_load_warns_about_non_finite_weights(tmp_path, dtype):
    bundle, counts = _poisoned()
    spec, params = bundle["blk"]
    bundle = {"blk": (spec, {k: v.astype(reference.numpy_dtype(dtype)) for k, v in params.items()})}
    path = tmp_path / "nan.safetensors"
    attnport.save(path, bundle)
    with pytest.warns(NonFiniteWarning) as record:
        attnport.load(path)
    warning = record[0].message
    assert warning.counts == counts and warning.path == str(path)
    assert "blk.fc1.weight: 3 NaN, 1 Inf" in str(warning) and "blk.fc2.bias: 0 NaN, 1 Inf" in str(warning)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".h5"])
def test_read_weights_warns_about_non_finite_weights(tmp_path, suffix):
    bundle, counts = _poisoned()
    tensors = {ckpt.module_key("blk", k): v for k, v in bundle["blk"][1].items()}
    path = tmp_path / f"nan{suffix}"
    if suffix == ".safetensors":
        attnport.save(path, bundle)
    else:
        pytest.importorskip("torch" if suffix == ".pt" else "h5py")
        _save_as(path, tensors)
    with pytest.warns(NonFiniteWarning) as record:
        read_weights(path)
    assert record[0].message.counts == counts


def test_finite_weights_do_not_warn(tmp_path):
    bundle, _ = _poisoned()
    spec = bundle["blk"][0]
    path = tmp_path / "ok.safetensors"
    attnport.save(path, {"blk": (spec, spec.init_params())})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attnport.load(path)
        read_weights(path)


def test_cli_prints_the_non_finite_warning(tmp_path):
    bundle, _ = _poisoned()
    path = tmp_path / "nan.safetensors"
    attnport.save(path, bundle)
    done = subprocess.run([sys.executable, "-m", "attnport", "inspect", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    warning = [line for line in done.stderr.splitlines() if "non-finite" in line]
    assert len(warning) == 1 and warning[0].startswith(f"attnport: warning: {path}: non-finite weights in 2 tensor")
    assert "blk.fc1.weight: 3 NaN, 1 Inf" in warning[0]
    assert "NonFiniteWarning" not in done.stderr and ".py:" not in done.stderr  # no Python source line


def test_ctrl_c_while_reading_exits_130_without_a_traceback(tmp_path, monkeypatch, capsys):
    from attnport import cli, convert

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "read_weights", interrupted)
    path = tmp_path / "w.safetensors"
    attnport.save(path, {"m": (reference.SE(8), reference.SE(8).init_params())})
    assert cli.main(["inspect", str(path)]) == 130
    assert capsys.readouterr().err == "attnport: interrupted\n"


# --------------------------------------------------------------------------- signals during a write

WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import reference
    from attnport import checkpoint as ckpt

    def slow(f, data):  # test hook: write half, say so, then block until a signal arrives
        f.write(data[: len(data) // 2])
        f.flush()
        print("ready", os.getpid(), flush=True)
        time.sleep(60)

    ckpt._write_payload = slow
    spec = reference.SE(64, ratio=4)
    target, how = sys.argv[1], sys.argv[2]
    if how == "api":
        try:
            ckpt.save(target, {"m": (spec, spec.init_params(seed=1))}, force=True)
        except KeyboardInterrupt as exc:
            print("KeyboardInterrupt", type(exc).__name__, exc, flush=True)
            sys.exit(3)
    else:
        from attnport import cli
        sys.exit(cli.main(["convert", sys.argv[3], target, "--to", "keras", "--force"]))
""")


@pytest.fixture()
def start_writer(tmp_path):
    """Starts a writer blocked mid-write: (process, target). Any writer still running is killed at teardown."""
    started = []

    def start(how="api", src=None):
        target = tmp_path / "out.safetensors"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), how, str(src or "")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        started.append(proc)
        line = proc.stdout.readline()
        assert line.startswith("ready"), f"the writer did not start: {line}"
        temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert len(temps) == 1 and f"-{proc.pid}-" in temps[0]  # mid-write: the temporary file is there
        return proc, target

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture()
def old_target(tmp_path):
    spec = reference.ECA(16)
    attnport.save(tmp_path / "out.safetensors", {"old": (spec, spec.init_params())})
    os.chmod(tmp_path / "out.safetensors", 0o600)
    return (tmp_path / "out.safetensors").read_bytes()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_remove_the_temporary_file(tmp_path, old_target, start_writer, signum):
    proc, target = start_writer()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signum and "Traceback" not in stderr  # ended by the signal, as it would have
    assert os.listdir(tmp_path) == ["out.safetensors"] and target.read_bytes() == old_target


def test_sigint_removes_the_temporary_file_and_raises_keyboard_interrupt(tmp_path, old_target, start_writer):
    proc, target = start_writer()
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and stdout.startswith("KeyboardInterrupt Interrupted")
    assert f"{target}: interrupted by SIGINT" in stdout
    assert os.listdir(tmp_path) == ["out.safetensors"] and target.read_bytes() == old_target


def test_cli_sigint_ends_without_a_traceback(tmp_path, old_target, start_writer):
    src = tmp_path / "src.safetensors"
    spec = reference.SE(64, ratio=4)
    attnport.save(src, {"m": (spec, spec.init_params())})
    proc, target = start_writer("cli", src)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr  # the shell's convention for Ctrl-C
    assert f"attnport: {target}: interrupted by SIGINT; nothing was written" in stderr
    assert sorted(os.listdir(tmp_path)) == ["out.safetensors", "src.safetensors"]
    assert target.read_bytes() == old_target


def test_sigkill_leftovers_do_not_outlive_the_next_write(tmp_path, old_target, start_writer):
    proc, target = start_writer()
    proc.kill()
    proc.communicate(timeout=60)
    (stale,) = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    # a live writer's temporary file (this process's pid) and another target's are kept
    live = stale.replace(f"-{proc.pid}-", f"-{os.getpid()}-")
    other = stale.replace(".out.safetensors.", ".other.safetensors.")
    for name in (live, other):
        (tmp_path / name).write_bytes(b"in progress")
    spec = reference.ECA(16)
    ckpt.save(target, {"new": (spec, spec.init_params())}, force=True)
    assert sorted(os.listdir(tmp_path)) == sorted(["out.safetensors", live, other])
    assert list(attnport.load(target)) == ["new"]


def test_docs_state_the_bounds():
    text = (REPO / "docs" / "how-to" / "convert-a-checkpoint.md").read_text()
    section = text[text.index("### Resource bounds"):text.index("## Converting weights")]
    assert section.count(f"**{limits.MAX_EXPANSION}×**") == 2
    assert all(name in section for name in limits.H5_BUILTIN_FILTERS.values())


def test_torch_refusal_names_the_class_torch_would_not_build():
    """torch's "Can only build ... but got <class X>" names a class: kept, in the same words as a global."""
    import pickle

    from attnport.files import _torch_refusal

    exc = pickle.UnpicklingError("Weights only load failed.\nCan only build Tensor, Parameter, OrderedDict or types "
                                 "allowlisted via `add_safe_globals`, but got <class 'mymodels.Block'>")
    message = _torch_refusal(exc, "2")
    assert message.startswith(": it holds pickled Python objects beyond tensors (an object of class mymodels.Block)")
    _assert_says_what_to_do(message)
