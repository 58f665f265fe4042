"""README and the docs site must state what the code does: the generated tables, the commands, runnable
examples, and a site that builds strictly."""
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import reference
from attnport import tables

ROOT = pathlib.Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {str(p.relative_to(ROOT / "docs")): p.read_text() for p in sorted((ROOT / "docs").rglob("*.md"))}


def test_weight_table_is_current():
    assert tables.weight_table() in DOCS["reference/weights.md"]


def test_network_model_table_is_current():
    from attnport import net_tables

    assert net_tables.model_table() in DOCS["reference/networks.md"]


def test_network_tolerance_follows_the_documented_derivation():
    # rtol = depth * 128 * u; seresnet50: 1 stem conv + 16 blocks x (3 convs + 2 SE linears) + the classifier
    spec = reference.nets.get("seresnet50")
    assert spec.depth() == 1 + 16 * (3 + 2) + 1
    tol = reference.network_tolerance(spec, "float64", [-3.0, 2.0])
    assert tol.rtol == 82 * 128 * 2.0 ** -53 and tol.atol == 3 * tol.rtol
    assert reference.network_tolerance(spec, "float32", [0.5]).atol == 82 * 128 * 2.0 ** -24
    assert "1.2e-12" in DOCS["explanation/tolerance.md"] and f"{82 * 128 * 2.0 ** -53:.2g}" == "1.2e-12"


def test_tolerance_table_is_current():
    assert tables.tolerance_table() in DOCS["explanation/tolerance.md"]


def test_bench_tables_are_the_committed_runs():
    """"Pick a backend" is generated from the committed runs in benchmarks/results, prose included."""
    import json

    from attnport.bench import readme_section, report

    page = DOCS["how-to/pick-a-backend.md"]
    results = ROOT / "benchmarks" / "results"
    for name in ("large.json", "large_hugepages.json"):
        run = json.loads((results / name).read_text())
        assert report.markdown(run, modules=("SE", "ECA", "CBAM")) in page, name
        assert run["meta"]["sizes"] == {"large": [32, 56, 56, 256]} and run["meta"]["repeats"] >= 10, name
        assert not any(r["below_floor"] for r in run["rows"]), name  # a ratio below 1 means the floor is wrong
    run = json.loads((results / "large.json").read_text())
    assert report.targets_markdown(run) in page and report.bandwidth_markdown(run) in page
    assert (ROOT / "docs" / "assets" / "benchmarks" / "large.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](../assets/benchmarks/large.png)" in page
    assert readme_section.section() == page


def test_bench_method_tables_are_the_committed_runs():
    from attnport.bench import readme_section

    page = DOCS["explanation/benchmark-method.md"]
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


def test_readme_commands_are_what_ci_runs():
    for command in ('pip install -e ".[all]" && attnport check', 'pip install -e ".[all,test]" && pytest -n 2'):
        assert command in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[all,test]"' in ci and re.search(r"^pytest -n 2 ", ci, re.M)


def test_readme_stays_a_front_door():
    """README gets people started and links to the manual: about 150 lines, and every docs page it names
    exists."""
    assert len(README.splitlines()) <= 160
    for path in re.findall(r"`(docs/[\w/.-]+\.md)`", README):
        assert (ROOT / path).is_file(), path


def test_the_extras_never_pin_torch():
    """A CPU build of torch and torchvision installed first must satisfy every extra: no extra pins them,
    caps them or asks for a CUDA package."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, requirements in extras.items():
        for requirement in requirements:
            package = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
            if package in ("torch", "torchvision"):
                assert re.fullmatch(r"(torch|torchvision)(>=[\d.]+)?", requirement), (name, requirement)
            assert not package.startswith("nvidia"), (name, requirement)
    assert "attnport[docs]" in extras["test"] and any(r.startswith("pytest-xdist") for r in extras["test"])


def _python_blocks(text):
    blocks, inside, current = [], False, []
    for line in text.splitlines():
        if line.strip() == "```python":
            inside, current = True, []
        elif line.strip() == "```" and inside:
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


PAGES_WITH_CODE = ["README.md"] + [name for name, text in DOCS.items() if "```python" in text]


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_examples_run(page):
    """Every Python block of README and of each docs page runs, in order, in one namespace per page."""
    from helpers import get_bridge
    for name in ("torch", "tf", "jax"):
        get_bridge(name)  # skip (only) when a framework is missing
    text = README if page == "README.md" else DOCS[page]
    namespace = {}
    for i, block in enumerate(_python_blocks(text)):
        try:
            exec(compile(block, f"{page} python block {i}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - report which block broke
            raise AssertionError(f"{page} python block {i} fails: {exc!r}\n{block}") from exc


def test_the_code_examples_are_many():
    assert len(_python_blocks(README)) >= 5 and len(PAGES_WITH_CODE) >= 5


def test_peer_key_tables_are_current():
    from reference import peers

    for layout in peers.PEER_LAYOUTS.values():
        assert layout.key_table() in DOCS["reference/peer-key-tables.md"]


def test_docs_list_every_verify_catalogue_entry():
    from attnport import verification

    for entry in verification.CATALOGUE:
        assert f"| `{entry.name}` |" in DOCS["how-to/verify-a-port.md"]


def test_docs_list_every_network_catalogue_entry():
    from attnport import netverify

    for entry in (*netverify.NET_CATALOGUE, netverify.BN_MOMENTUM_ENTRY):
        assert f"| `{entry.name}` |" in DOCS["how-to/verify-a-network.md"]


def test_the_docs_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing page or an API entry that no longer exists fails."""
    pytest.importorskip("mkdocs")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "eca_kernel_size" in api or "kernel_size" in api  # the API page holds the docstrings
