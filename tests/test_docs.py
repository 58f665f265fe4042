"""README must state what the code does: weight table, tolerance table, commands."""
import pathlib

import numpy as np

import reference
from attnport import tables

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_readme_weight_table_is_current():
    assert tables.weight_table() in README


def test_readme_tolerance_table_is_current():
    assert tables.tolerance_table() in README


def test_readme_bench_tables_are_the_committed_runs():
    """The "Choosing a backend" tables are generated from the committed runs in benchmarks/results."""
    import json

    from attnport.bench import readme_section, report

    results = pathlib.Path(__file__).parents[1] / "benchmarks" / "results"
    for name in ("large.json", "large_hugepages.json"):
        run = json.loads((results / name).read_text())
        assert report.markdown(run, modules=("SE", "ECA", "CBAM")) in README, name
        assert run["meta"]["sizes"] == {"large": [32, 56, 56, 256]} and run["meta"]["repeats"] >= 10, name
        assert not any(r["below_floor"] for r in run["rows"]), name  # a ratio below 1 means the floor is wrong
    run = json.loads((results / "large.json").read_text())
    assert report.targets_markdown(run) in README and report.bandwidth_markdown(run) in README
    assert (results / "large.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "benchmarks/results/large.png" in README
    assert readme_section.section() in README  # the prose's numbers too


def test_bench_page_tables_are_the_committed_runs():
    from attnport.bench import readme_section

    page = (pathlib.Path(__file__).parents[1] / "benchmarks" / "README.md").read_text()
    blocks = readme_section.page_blocks()
    assert set(blocks) == {"cache_floor", "noise", "targets"}
    assert readme_section.rewrite_blocks(page, blocks) == page
    for block in blocks.values():
        assert block and block in page


def test_tolerance_follows_the_documented_derivation():
    # rtol = atol = K * u with K = 128 and u = eps/2, read from NumPy's finfo, not from the code under test
    for dtype, eps in (("float32", 2.0 ** -23), ("float64", 2.0 ** -52)):
        tol = reference.tolerance(dtype)
        assert tol.rtol == tol.atol == 128 * eps / 2
        assert np.finfo(dtype).eps == eps
        assert reference.pair_tolerance(dtype).rtol == 2 * tol.rtol
    # half precision: float32 accumulation plus four roundings to the input dtype (bf16 eps 2^-7, fp16 2^-10)
    for dtype, eps in (("float16", 2.0 ** -10), ("bfloat16", 2.0 ** -7)):
        assert reference.tolerance(dtype).rtol == 128 * 2.0 ** -24 + 4 * eps / 2
    assert 1e-2 <= reference.tolerance("bfloat16").rtol <= 1.6e-2  # JAX 1e-2, torch.testing 1.6e-2
    # anchored against torch.testing's float32 defaults (rtol 1.3e-6, atol 1e-5): same order, not looser in atol
    assert 1.3e-6 < reference.tolerance("float32").rtol < 1e-5
    assert reference.tolerance("float32").atol <= 1e-5


def test_readme_commands():
    for command in ('pip install -e ".[all]" && attnport check', 'pip install -e ".[all,test]" && pytest'):
        assert command in README


def _python_blocks():
    blocks, inside, current = [], False, []
    for line in README.splitlines():
        if line.strip() == "```python":
            inside, current = True, []
        elif line.strip() == "```" and inside:
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


def test_readme_python_examples_run():
    from helpers import get_bridge
    for name in ("torch", "tf", "jax"):
        get_bridge(name)  # skip (only) when a framework is missing
    blocks = _python_blocks()
    assert len(blocks) >= 5
    for i, block in enumerate(blocks):
        namespace = {}
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - report which block broke
            raise AssertionError(f"README python block {i} fails: {exc!r}\n{block}") from exc


def test_readme_peer_key_tables_are_current():
    from reference import peers

    for layout in peers.PEER_LAYOUTS.values():
        assert layout.key_table() in README


def test_readme_lists_every_verify_catalogue_entry():
    from attnport import verification

    for entry in verification.CATALOGUE:
        assert f"| `{entry.name}` |" in README
