"""attnport's checkpoint file (`attnport.checkpoint`): safetensors + JSON metadata, NumPy and safetensors only.

Round trips are bit-exact and dtype-exact in float64/32/16 and bfloat16; the raw header is read
independently to prove other tools see standard dtype codes; writes are atomic and refuse to
overwrite; corrupt, truncated, foreign and mismatched files are refused with errors naming the
file, the prefix and the key; and a pickle is never unpickled.
"""
from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest

import reference
from attnport import checkpoint as ckpt
from attnport.checkpoint import CheckpointError, CheckpointParamError

DTYPES = ["float32", "float64", "float16", "bfloat16"]
CODES = {"float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16"}


def make_bundle(dtype="float32"):
    specs = {
        "layer1.0.se": reference.SE.timm(64),
        "layer1.1.eca": reference.ECA.circular(7),
        "layer2.0.cbam": reference.CBAM.official(40),
        "layer2.1.cbam": reference.CBAM.timm(40),          # no MLP bias, (mean, max)
        "head.se": reference.SE(24, activation="gelu_tanh", gate="hard_sigmoid_keras2", bias=False),
    }
    return {prefix: (spec, spec.init_params(seed=i, dtype=reference.numpy_dtype(dtype)))
            for i, (prefix, spec) in enumerate(specs.items())}


def raw_header(path) -> dict:
    """The safetensors header, parsed without safetensors: u64 little-endian length, then JSON."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def write_raw(path, tensors: dict[str, np.ndarray], metadata: dict | None) -> None:
    """A hand-built safetensors file (bypasses `save`'s validation)."""
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=metadata)


def attnport_metadata(modules: dict, version="1") -> dict:
    return {"format": "attnport", "format_version": version, "modules": json.dumps(modules)}


def assert_bundles_equal(got, want):
    assert list(got) == list(want)
    for prefix, (spec, params) in want.items():
        got_spec, got_params = got[prefix]
        assert got_spec == spec and type(got_spec) is type(spec)
        assert list(got_params) == list(spec.param_shapes())
        for name, arr in params.items():
            assert got_params[name].dtype == arr.dtype, (prefix, name)
            assert got_params[name].shape == arr.shape, (prefix, name)
            assert got_params[name].tobytes() == arr.tobytes(), (prefix, name)


# --------------------------------------------------------------------------- round trips and the header

@pytest.mark.parametrize("dtype", DTYPES)
def test_bundle_round_trip_is_bit_exact(tmp_path, dtype):
    bundle = make_bundle(dtype)
    path = tmp_path / "net.safetensors"
    summary = ckpt.save(path, bundle)
    assert_bundles_equal(ckpt.load(path), bundle)

    n_tensors = sum(len(p) for _, p in bundle.values())
    assert (summary.modules, summary.tensors, summary.bytes) == (5, n_tensors, path.stat().st_size)
    assert summary.dtypes == [dtype] and summary.path == str(path)
    assert str(summary) == f"wrote 5 modules, {n_tensors} tensors, {path.stat().st_size:,} bytes, {dtype} to {path}"

    header = raw_header(path)
    keys = {k for k in header if k != "__metadata__"}
    assert keys == {ckpt.module_key(p, n) for p, (_, params) in bundle.items() for n in params}
    assert {header[k]["dtype"] for k in keys} == {CODES[dtype]}  # standard codes other tools read
    for prefix, (_, params) in bundle.items():
        for name, arr in params.items():
            assert header[f"{prefix}.{name}"]["shape"] == list(arr.shape)


def test_mixed_dtypes_and_special_values(tmp_path):
    """Each tensor keeps its own dtype; NaN payloads, -0.0, inf and subnormals survive bit for bit."""
    spec = reference.SE(8, ratio=2)
    params = spec.init_params(dtype=np.float32)
    params["fc1.weight"] = params["fc1.weight"].astype(reference.numpy_dtype("bfloat16"))
    params["fc2.weight"] = params["fc2.weight"].astype(np.float16)
    bias = params["fc2.bias"].astype(np.float64)
    bias.view(np.uint64)[:4] = [0x7FF8_0000_DEAD_BEEF, 0x8000_0000_0000_0000, 0x7FF0_0000_0000_0000, 1]
    params["fc2.bias"] = bias
    path = tmp_path / "mixed.safetensors"
    summary = ckpt.save(path, {"blk": (spec, params)})
    assert summary.dtypes == ["bfloat16", "float16", "float32", "float64"]
    assert "bfloat16/float16/float32/float64" in str(summary)
    with pytest.warns(ckpt.NonFiniteWarning, match="blk.fc2.bias: 1 NaN, 1 Inf"):
        assert_bundles_equal(ckpt.load(path), {"blk": (spec, params)})
    header = raw_header(path)
    assert {k: header[k]["dtype"] for k in header if k != "__metadata__"} == {
        "blk.fc1.weight": "BF16", "blk.fc1.bias": "F32", "blk.fc2.weight": "F16", "blk.fc2.bias": "F64"}


def test_single_module_uses_bare_names(tmp_path):
    spec = reference.CBAM.official(40)
    params = spec.init_params(seed=3, dtype=reference.numpy_dtype("bfloat16"))
    path = tmp_path / "cbam.safetensors"
    summary = ckpt.save(path, {"": (spec, params)})
    assert str(summary).startswith(f"wrote 1 module, {len(params)} tensors, ")
    assert set(raw_header(path)) - {"__metadata__"} == set(params)
    assert_bundles_equal(ckpt.load(path), {"": (spec, params)})


def test_metadata_is_readable_without_attnport(tmp_path):
    bundle = make_bundle()
    path = tmp_path / "net.safetensors"
    ckpt.save(path, bundle)
    meta = raw_header(path)["__metadata__"]
    assert set(meta) == {"format", "format_version", "modules"}
    assert meta["format"] == "attnport" and meta["format_version"] == "1"
    assert all(isinstance(v, str) for v in meta.values())
    modules = json.loads(meta["modules"])
    assert list(modules) == list(bundle)  # the bundle's order
    assert modules["layer1.0.se"] == {"kind": "se", "spec": {
        "channels": 64, "ratio": 16, "reduced_channels": 8, "activation": "relu", "gate": "sigmoid", "bias": True}}
    assert modules["layer1.1.eca"] == {"kind": "eca", "spec": {
        "channels": 7, "gamma": 2, "b": 1, "kernel_size": 3, "padding_mode": "circular"}}
    assert modules["layer2.1.cbam"]["kind"] == "cbam"
    assert modules["layer2.1.cbam"]["spec"]["spatial_order"] == ["mean", "max"]   # tuple -> list
    assert modules["layer2.0.cbam"]["spec"]["bn_momentum"] == 0.01
    # and read_tensors gives the same metadata plus every tensor, bfloat16 included
    tensors, meta2 = ckpt.read_tensors(path)
    assert meta2 == meta and len(tensors) == sum(len(p) for _, p in bundle.values())


def test_read_tensors_reads_plain_safetensors(tmp_path):
    """A peer's file without attnport metadata: read_tensors reads it, load refuses it by name."""
    bf16 = reference.numpy_dtype("bfloat16")
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3).astype(bf16), "b": np.arange(3, dtype=np.int64)}
    path = tmp_path / "peer.safetensors"
    write_raw(path, tensors, None)
    got, meta = ckpt.read_tensors(path)
    assert meta == {}
    assert got["a"].dtype == bf16 and got["a"].tobytes() == tensors["a"].tobytes()
    assert got["b"].dtype == np.int64 and (got["b"] == tensors["b"]).all()
    with pytest.raises(CheckpointError, match=r"peer\.safetensors.*not an attnport checkpoint"):
        ckpt.load(path)


# --------------------------------------------------------------------------- writing safely

def test_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "net.safetensors"
    ckpt.save(path, make_bundle("float32"))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="net.safetensors"):
        ckpt.save(path, make_bundle("float16"))
    assert path.read_bytes() == before
    ckpt.save(path, make_bundle("float16"), force=True)
    assert ckpt.load(path)["layer1.0.se"][1]["fc1.weight"].dtype == np.float16
    assert os.listdir(tmp_path) == ["net.safetensors"]


def test_written_file_has_normal_permissions(tmp_path):
    path = tmp_path / "net.safetensors"
    ckpt.save(path, make_bundle())
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, existing):
    path = tmp_path / "net.safetensors"
    if existing:
        ckpt.save(path, make_bundle("float64"))
    before = sorted(os.listdir(tmp_path)), path.read_bytes() if existing else None

    def half_then_fail(f, data):
        f.write(data[: len(data) // 2])
        f.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_payload", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(path, make_bundle("float32"), force=True)
    assert (sorted(os.listdir(tmp_path)), path.read_bytes() if existing else None) == before
    assert path.exists() == existing


def test_failed_verification_leaves_nothing_behind(tmp_path, monkeypatch):
    """If the file does not read back bit for bit, it is not published."""
    path = tmp_path / "net.safetensors"

    def flip_a_bit(f, data):
        data = bytearray(data)
        data[-1] ^= 1
        f.write(bytes(data))

    monkeypatch.setattr(ckpt, "_write_payload", flip_a_bit)
    with pytest.raises(CheckpointError, match="does not read back bit for bit.*with different bytes"):
        ckpt.save(path, make_bundle())
    assert os.listdir(tmp_path) == []


def test_save_validates_every_module_by_prefix(tmp_path):
    bundle = make_bundle()
    spec, params = bundle["layer2.0.cbam"]
    params = dict(params)
    del params["bn.running_var"]
    params["fc1.weight"] = params["fc1.weight"][:, :-1]
    params["extra"] = np.zeros(1, np.float32)
    bundle["layer2.0.cbam"] = (spec, params)
    with pytest.raises(reference.ParamError, match="layer2.0.cbam") as info:
        ckpt.save(tmp_path / "x.safetensors", bundle)
    err = info.value
    assert err.missing == ["bn.running_var"] and err.unexpected == ["extra"]
    assert err.mismatched == {"fc1.weight": ((2, 40), (2, 39))}
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad, match", [
    ({"a": (reference.SE(8), {"fc1.weight": np.zeros((2, 8), np.int32)})}, "a"),
    ({"": (reference.ECA(8), None), "b": (reference.ECA(8), None)}, "cannot be combined"),
    ({"a": (reference.ECA(8), None), "a.b": (reference.ECA(8), None)}, "lies inside"),
    ({"a..b": (reference.ECA(8), None)}, "empty dotted component"),
    ({"a": ("not a spec", {})}, "expected a reference spec"),
    ({}, "empty"),
])
def test_save_refuses_bad_bundles(tmp_path, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ckpt.save(tmp_path / "x.safetensors", bad)
    assert os.listdir(tmp_path) == []


def test_save_refuses_unsupported_dtype_and_suffix(tmp_path):
    spec = reference.ECA(8)
    with pytest.raises(reference.ParamError, match=r"conv.weight.*float128|conv.weight.*longdouble"):
        ckpt.save(tmp_path / "x.safetensors", {"e": (spec, spec.init_params(dtype=np.longdouble))})
    with pytest.raises(ValueError, match=r"x\.pt.*\.safetensors"):
        ckpt.save(tmp_path / "x.pt", {"e": (spec, spec.init_params())})
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- reading safely

def test_truncated_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "net.safetensors"
    ckpt.save(path, make_bundle("bfloat16"))
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    for cut in (0, 5, 8 + n // 2, 8 + n, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"net\.safetensors") as info:
            ckpt.load(path)
        assert type(info.value).__module__ == "attnport.checkpoint"


def test_corrupt_header_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "net.safetensors"
    ckpt.save(path, make_bundle())
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    data[8 + n // 2] = ord("\x00")  # breaks the JSON
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"net\.safetensors.*corrupt"):
        ckpt.load(path)
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(CheckpointError, match=r"net\.safetensors"):
        ckpt.read_tensors(path)


class _Payload:
    """Unpickling this calls ``open(marker, "w")``, creating the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickle_is_refused_without_unpickling(tmp_path):
    # The payload works: unpickling it creates its marker.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()

    marker = tmp_path / "pwned"
    payload = pickle.dumps({"fc1.weight": _Payload(marker)}, protocol=pickle.HIGHEST_PROTOCOL)
    for name in ("evil.safetensors", "evil.pt", "evil.bin"):
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            ckpt.load(path)
    with pytest.raises(CheckpointError, match=r"evil\.safetensors.*pickle.*never unpickles"):
        ckpt.load(tmp_path / "evil.safetensors")
    with pytest.raises(CheckpointError, match=r"evil\.bin.*pickle"):
        ckpt.read_tensors(tmp_path / "evil.bin")
    assert not marker.exists()


def test_zip_archive_is_named(tmp_path):
    import zipfile

    path = tmp_path / "model.safetensors"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*zip archive"):
        ckpt.load(path)


def test_mismatched_tensors_are_reported_by_prefix_and_key(tmp_path):
    se, cbam = reference.SE(16, ratio=4), reference.CBAM.timm(40)
    p_se, p_cbam = se.init_params(), cbam.init_params()
    tensors = {f"blk.se.{k}": v for k, v in p_se.items() if k != "fc2.bias"}          # missing fc2.bias
    tensors["blk.se.fc1.weight"] = np.zeros((4, 15), np.float32)                      # wrong shape
    tensors.update({f"blk.cbam.{k}": v for k, v in p_cbam.items()})
    tensors["blk.cbam.fc1.bias"] = np.zeros(3, np.float32)                            # timm CBAM has none
    tensors["stray.weight"] = np.zeros(2, np.float32)                                 # no such module
    modules = {"blk.se": ckpt._spec_to_json(se), "blk.cbam": ckpt._spec_to_json(cbam)}
    path = tmp_path / "bad.safetensors"
    write_raw(path, tensors, attnport_metadata(modules))
    with pytest.raises(CheckpointParamError) as info:
        ckpt.load(path)
    err = info.value
    assert set(err.modules) == {"blk.se", "blk.cbam"}
    assert err.modules["blk.se"].missing == ["blk.se.fc2.bias"]
    assert err.modules["blk.se"].mismatched == {"blk.se.fc1.weight": ((4, 16), (4, 15))}
    assert err.modules["blk.se"].unexpected == []
    assert err.modules["blk.cbam"].unexpected == ["blk.cbam.fc1.bias"]
    assert err.modules["blk.cbam"].missing == [] and err.modules["blk.cbam"].mismatched == {}
    assert err.orphans == ["stray.weight"]
    message = str(err)
    assert "bad.safetensors" in message
    assert "module 'blk.se': missing key blk.se.fc2.bias" in message
    assert "module 'blk.se': shape mismatch for blk.se.fc1.weight: expected (4, 16), got (4, 15)" in message
    assert "module 'blk.cbam': unexpected key blk.cbam.fc1.bias" in message
    assert "no declared module: stray.weight" in message


def test_single_module_file_with_an_extra_key(tmp_path):
    spec = reference.ECA(64)
    tensors = dict(spec.init_params(), bias=np.zeros(1, np.float32))
    path = tmp_path / "eca.safetensors"
    write_raw(path, tensors, attnport_metadata({"": ckpt._spec_to_json(spec)}))
    with pytest.raises(CheckpointParamError, match="unexpected key bias") as info:
        ckpt.load(path)
    assert info.value.modules[""].unexpected == ["bias"]


@pytest.mark.parametrize("metadata, match", [
    (attnport_metadata({"": {"kind": "se", "spec": {"channels": 8}}}, version="2"),
     r"format version '2' is not supported.*reads version 1"),
    (None, "no attnport metadata"),
    ({"format": "other"}, "format is 'other'"),
    (attnport_metadata({}, version="one"), "format version 'one'"),
    ({"format": "attnport", "format_version": "1", "modules": "{not json"}, "not valid JSON"),
    (attnport_metadata({"m": {"kind": "gc", "spec": {}}}), r"module 'm': unknown kind 'gc'"),
    (attnport_metadata({"m": {"kind": "se", "spec": {"channels": 8, "colour": "red"}}}),
     r"module 'm': unknown se spec field\(s\) colour"),
    (attnport_metadata({"m": {"kind": "se", "spec": {"ratio": 4}}}), r"module 'm': missing se spec field\(s\) channels"),
    (attnport_metadata({"m": {"kind": "eca", "spec": {"channels": 8, "kernel_size": 4}}}),
     r"module 'm': invalid eca spec: kernel_size must be a positive odd integer"),
    (attnport_metadata({"m": {"kind": "se", "spec": {"channels": "8"}}}), r"module 'm': invalid se spec: channels"),
    (attnport_metadata({"a": {"kind": "se", "spec": {"channels": 8}},
                        "a.b": {"kind": "se", "spec": {"channels": 8}}}), "lies inside"),
])
def test_bad_metadata_is_refused_by_name(tmp_path, metadata, match):
    path = tmp_path / "meta.safetensors"
    write_raw(path, {"fc1.weight": np.zeros((2, 8), np.float32)}, metadata)
    with pytest.raises(CheckpointError, match=match) as info:
        ckpt.load(path)
    assert "meta.safetensors" in str(info.value)


def test_spec_fields_survive_exactly(tmp_path):
    """Non-default and float fields (bn_eps, bn_momentum) rebuild to an equal spec."""
    specs = [reference.CBAM(32, bn_eps=1e-3, spatial_order=("mean", "max"), gate="hard_sigmoid_keras2",
                            bn_momentum=0.3, spatial_kernel=3, spatial_norm=False),
             reference.SE.efficientnet(96, in_channels=16), reference.SE.mobilenetv3(72),
             reference.ECA(128, kernel_size=9), reference.ECA(5, gamma=3, b=0)]
    bundle = {f"m{i}": (s, s.init_params(seed=i)) for i, s in enumerate(specs)}
    path = tmp_path / "specs.safetensors"
    ckpt.save(path, bundle)
    assert_bundles_equal(ckpt.load(path), bundle)


# --------------------------------------------------------------------------- hostile headers and metadata

def hand_built(path, header: str, data: bytes) -> None:
    """A safetensors file from a literal header (duplicate keys and all), padded as safetensors pads."""
    raw = header.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("header, key", [
    ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}',
     "a"),
    ('{"w.x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
     '"w.x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', "w.x"),
    ('{"__metadata__":{"format":"attnport","format":"other"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
     "format"),
    ('{"__metadata__":{},"__metadata__":{"x":"y"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
     "__metadata__"),
])
def test_duplicate_header_keys_are_refused_by_name(tmp_path, header, key):
    path = tmp_path / "dup.safetensors"
    hand_built(path, header, bytes(16 if "[8,16]" in header else 8))
    for read in (ckpt.read_tensors, ckpt.load):
        with pytest.raises(CheckpointError) as info:
            read(path)
        assert f"dup.safetensors: the header lists the key {key!r} twice" in str(info.value)


NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("modules, match", [
    ("9" * 5000, r"the 'modules' metadata is not valid JSON"),
    (NESTED, r"the 'modules' metadata is not valid JSON"),
    ('{"m":' * 50_000 + "1" + "}" * 50_000, r"the 'modules' metadata is not valid JSON"),
    ('{"m":{"kind":"se","spec":{"channels":' + "9" * 5000 + "}}}", r"the 'modules' metadata is not valid JSON"),
    ('{"m":{"kind":"se","spec":{"channels":' + NESTED + "}}}", r"the 'modules' metadata is not valid JSON"),
    ('{"m":{"kind":"eca","spec":{"channels":' + "9" * 400 + "}}}", r"module 'm': missing key m.conv.weight"),
    ('{"m":{"kind":"se","spec":{"channels":1e999}}}', r"module 'm': invalid se spec"),
    ('{"m":{"kind":"se","spec":{"channels":NaN}}}', r"module 'm': invalid se spec"),
    ('{"m":{"kind":"se","spec":{"channels":{"a":1}}}}', r"module 'm': invalid se spec"),
    ('{"m":{"kind":"cbam","spec":{"channels":8,"spatial_order":' + "[" * 900 + "]" * 900 + "}}}",
     r"module 'm': invalid cbam spec"),
    ('{"m":{"kind":"se","spec":' + "[" * 900 + "]" * 900 + "}}", r"module 'm': metadata must be"),
])
def test_metadata_bombs_are_checkpoint_errors(tmp_path, capsys, modules, match):
    from attnport import cli

    path = tmp_path / "bomb.safetensors"
    write_raw(path, {"fc1.weight": np.zeros((2, 8), np.float32)},
              {"format": "attnport", "format_version": "1", "modules": modules})
    with pytest.raises(CheckpointError, match=match) as info:
        ckpt.load(path)
    assert str(info.value).startswith(f"{path}: ") and len(str(info.value)) < 2000
    assert cli.main(["inspect", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"attnport: {info.value}")


# --------------------------------------------------------------------------- names, modes, disk errors

@pytest.mark.parametrize("name", ["x.pt", "x", "x.safetensors.tmp", "x.safetensor", "x.h5", ".safetensors"])
def test_save_refuses_a_name_not_ending_in_safetensors(tmp_path, name):
    spec = reference.ECA(8)
    for write in (lambda p: ckpt.save(p, {"e": (spec, spec.init_params())}),
                  lambda p: ckpt.write_tensors(p, {"a": np.zeros(2, np.float32)}, {})):
        with pytest.raises(CheckpointError) as info:
            write(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: attnport writes safetensors files; the name must end " \
                                  f"in .safetensors"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["x.SAFETENSORS", "x.SafeTensors"])
def test_the_suffix_is_case_insensitive(tmp_path, name):
    bundle = make_bundle()
    ckpt.save(tmp_path / name, bundle)
    assert_bundles_equal(ckpt.load(tmp_path / name), bundle)
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("name", [
    "n" * 235 + ".safetensors",                 # 247 characters: the temporary name would pass 255
    "n" * 243 + ".safetensors",                 # 255, the longest legal name
    "é" * 121 + ".safetensors",                 # 254 bytes in UTF-8, 133 characters
])
def test_long_names_are_written(tmp_path, name):
    bundle = make_bundle()
    ckpt.save(tmp_path / name, bundle)
    ckpt.save(tmp_path / name, bundle, force=True)
    assert_bundles_equal(ckpt.load(tmp_path / name), bundle)
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604, 0o755, 0o400])
def test_force_keeps_the_existing_mode(tmp_path, capsys, mode):
    from attnport import cli

    path, src = tmp_path / "net.safetensors", tmp_path / "src.safetensors"
    ckpt.save(src, timm_bundle())
    for write in (lambda: ckpt.save(path, make_bundle(), force=True),
                  lambda: ckpt.write_tensors(path, {"a": np.ones(3, np.float32)}, {"k": "v"}, force=True),
                  lambda: cli.main(["convert", str(src), str(path), "--to", "timm", "--force"])):
        ckpt.save(path, make_bundle("float16"), force=True)
        os.chmod(path, mode)
        write()
        assert path.stat().st_mode & 0o7777 == mode
        assert ckpt.read_tensors(path)[0]  # the new contents


def _fail_for_temporary_files(monkeypatch, name: str, err: int, tmp_path) -> None:
    """``os.NAME`` raises ``err`` for temporary files (``*.tmp``) under tmp_path, as a full or
    read-only file system does."""
    real = getattr(os, name)

    def temporary(arg) -> bool:
        if isinstance(arg, int):
            try:
                arg = os.readlink(f"/proc/self/fd/{arg}")
            except OSError:
                return False
        return str(arg).startswith(str(tmp_path)) and str(arg).endswith(".tmp")

    def failing(*args, **kwargs):
        if temporary(args[0]):
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, failing)


# (os call that fails, errno, whether the target exists): force is needed for an existing target, and
# os.replace is the step with force (without it, os.link, or os.replace where links fail)
DISK_ERRORS = [(call, code, existing) for existing in (False, True)
               for call, code in [("open", "EROFS"), ("open", "ENOSPC"), ("open", "EDQUOT"), ("write", "ENOSPC"),
                                  ("write", "EIO"), ("fsync", "ENOSPC"), ("fsync", "EROFS"), ("replace", "EROFS")]]
DISK_ERRORS += [("link", "EROFS", False)]


@pytest.mark.parametrize("call, code, existing", DISK_ERRORS)
def test_disk_errors_are_named_and_leave_nothing(tmp_path, monkeypatch, call, code, existing):
    import errno as errnos

    err = getattr(errnos, code)
    path = tmp_path / "net.safetensors"
    if existing:
        ckpt.save(path, make_bundle("float64"))
    before = path.read_bytes() if existing else None
    _fail_for_temporary_files(monkeypatch, call, err, tmp_path)
    if call == "link":
        _fail_for_temporary_files(monkeypatch, "replace", err, tmp_path)
    with pytest.raises(ckpt.WriteError) as info:
        ckpt.save(path, make_bundle("float32"), force=existing or call == "replace")
    monkeypatch.undo()
    assert isinstance(info.value, OSError) and info.value.errno == err
    assert str(info.value) == f"{path}: cannot write: {os.strerror(err)}; nothing was written" + \
        (", the existing file is untouched" if existing else "")
    assert os.listdir(tmp_path) == (["net.safetensors"] if existing else [])
    assert (path.read_bytes() if existing else None) == before


def timm_bundle():
    """The modules of `make_bundle` that timm computes (for conversions to the timm layout)."""
    bundle = make_bundle()
    return {prefix: bundle[prefix] for prefix in ("layer1.0.se", "layer2.1.cbam")}


def test_cli_reports_disk_errors_with_exit_2(tmp_path, monkeypatch, capsys):
    from attnport import cli

    src, out = tmp_path / "src.safetensors", tmp_path / "out.safetensors"
    ckpt.save(src, timm_bundle())
    for target in ("keras", "timm"):
        for call, err in (("open", 30), ("fsync", 28)):
            _fail_for_temporary_files(monkeypatch, call, err, tmp_path)
            code = cli.main(["convert", str(src), str(out), "--to", target])
            monkeypatch.undo()
            stderr = capsys.readouterr().err
            assert code == 2 and stderr == f"attnport: {out}: cannot write: {os.strerror(err)}; nothing was written\n"
            assert os.listdir(tmp_path) == ["src.safetensors"]


@pytest.mark.parametrize("name", ["out.pt", "out", "out.h5"])
def test_cli_refuses_a_bad_output_name_with_exit_2(tmp_path, capsys, name):
    from attnport import cli

    src = tmp_path / "src.safetensors"
    ckpt.save(src, timm_bundle())
    for target in ("keras", "timm"):
        code = cli.main(["convert", str(src), str(tmp_path / name), "--to", target])
        assert code == 2 and f"{tmp_path / name}: attnport writes safetensors files" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["src.safetensors"]


# --------------------------------------------------------------------------- deterministic bytes

def test_identical_writes_give_identical_bytes(tmp_path):
    """safetensors writes the metadata in hash order; attnport sorts it."""
    bundle = make_bundle()
    meta = {f"key{i}": str(i) for i in range(6)}
    saved, written = set(), set()
    for i in range(12):
        ckpt.save(tmp_path / f"s{i}.safetensors", bundle)
        ckpt.write_tensors(tmp_path / f"w{i}.safetensors", {"a": np.ones(2, np.float32)}, meta)
        saved.add((tmp_path / f"s{i}.safetensors").read_bytes())
        written.add((tmp_path / f"w{i}.safetensors").read_bytes())
    assert len(saved) == 1 and len(written) == 1
    assert list(raw_header(tmp_path / "w0.safetensors")["__metadata__"]) == sorted(meta)


def test_identical_conversions_give_identical_bytes(tmp_path, capsys):
    from attnport import cli

    src = tmp_path / "src.safetensors"
    ckpt.save(src, timm_bundle())
    outputs = set()
    for i in range(12):
        assert cli.main(["convert", str(src), str(tmp_path / f"o{i}.safetensors"), "--to", "timm"]) == 0
        outputs.add((tmp_path / f"o{i}.safetensors").read_bytes())
    assert len(outputs) == 1


def test_prefix_checks_are_linear_in_the_number_of_modules():
    """A whole network's bundle holds thousands of modules: the nesting check looks each prefix's ancestors
    up instead of comparing every pair (lines of attnport code counted, never timed)."""
    from attnport.checkpoint import CheckpointError, _check_prefixes

    from helpers import lines_run

    def error(message):
        return CheckpointError("x.safetensors", message)

    def prefixes(n):
        return [f"layer{i // 4}.{i % 4}.se" for i in range(n)]

    small, big = (lines_run(lambda n=n: _check_prefixes(prefixes(n), error)) for n in (500, 5000))
    assert big <= 12 * small, (small, big)
    with pytest.raises(CheckpointError, match="'layer3.1.se.x' lies inside module 'layer3.1.se'"):
        _check_prefixes(prefixes(5000) + ["layer3.1.se.x"], error)
    _check_prefixes(["a", "a-b", "a_b.c", "ab.c"], error)  # siblings that share characters are not nested
