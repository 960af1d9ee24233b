"""hwsim installed outside the checkout: the wheel and sdist carry the presets and studies,
the installed package finds them, and the declared dependencies and CI match the README."""

import ast
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from import_graph import find_cycle, imports_of

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {"device_configs": sorted(p.name for p in (ROOT / "device_configs").glob("*.yaml")),
           "experiments": sorted(p.name for p in (ROOT / "experiments").glob("*.yaml"))}


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """An sdist, and a wheel built from that sdist (python -m build), of a copy of the source
    (the build writes build/ and *.egg-info into the tree it builds)."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("hwsim", "device_configs", "experiments"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # -x: use this environment's setuptools as it is (no download, no version check)
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "-x", "--outdir",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    return next((tmp / "dist").glob("hwsim-*.tar.gz")), next((tmp / "dist").glob("hwsim-*.whl"))


def test_the_package_folders_are_links_to_the_visible_ones():
    """One copy: hwsim/device_configs and hwsim/experiments point at the top-level folders."""
    for folder in SHIPPED:
        link = ROOT / "hwsim" / folder
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve()


@pytest.mark.slow
def test_the_wheel_and_the_sdist_carry_every_preset_and_study(dist):
    sdist, wheel = dist
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        for folder, names in SHIPPED.items():
            for name in names:
                assert f"hwsim/{folder}/{name}" in in_wheel
                member = members[f"hwsim/{folder}/{name}"]
                assert member.isfile()  # a real file, not a link out of the package
                shipped = tar.extractfile(member).read()
                assert shipped == (ROOT / folder / name).read_bytes()
    assert "hwsim/engine/_mvm.c" in in_wheel  # the fused kernel's source, compiled on first use


@pytest.mark.slow
def test_the_installed_wheel_works_from_any_folder(dist, tmp_path):
    """Installed from the wheel (not the checkout): presets and shipped studies are found."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--target", str(site), str(dist[1])], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def py(*args):
        out = subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert py("-c", "import hwsim; print(hwsim.__file__)").startswith(str(site))
    listing = py("-m", "hwsim", "devices")
    for name in SHIPPED["device_configs"]:
        assert Path(name).stem in listing.split()
    code = "from hwsim.study import load_study; print(load_study('quick').path)"
    assert Path(py("-c", code).strip()) == site / "hwsim" / "experiments" / "quick.yaml"
    assert "quick" in py("-m", "hwsim", "study", "list")


def test_every_imported_library_is_a_declared_dependency():
    """No import of a package that `pip install hwsim` would not bring (scipy was one); an
    optional extra's package (ray) only where it is used, so hwsim runs without it."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in requirements}

    declared = names(meta["dependencies"])
    optional = names(d for extra, reqs in meta["optional-dependencies"].items()
                     if extra != "test" for d in reqs)
    stdlib = set(sys.stdlib_module_names)
    providers = packages_distributions()
    for path in (ROOT / "hwsim").rglob("*.py"):
        tree = ast.parse(path.read_text())
        at_import = {id(n) for n in _outside_functions(tree)}  # runs when it is imported
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names_ = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names_ = [node.module]
            else:
                continue
            for name in names_:
                top = name.split(".")[0]
                if top in stdlib or top == "hwsim":
                    continue
                dists = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
                if dists & optional:
                    assert id(node) not in at_import, \
                        f"{path.name} imports {top} (an optional extra) when it is imported"
                    continue
                assert dists & declared, f"{path.name} imports {top}, which no dependency provides"


def _outside_functions(node: ast.AST):
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child
            yield from _outside_functions(child)


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    """The README's quick start is two make targets; .ci/run calls the test one verbatim, and
    the Makefile installs (once, behind a stamp) before running the linter and the tests."""
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start")[1].split("\n## ")[0]
    blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)```", quick, flags=re.S)]
    assert blocks[:2] == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in ci
    make = (ROOT / "Makefile").read_text()
    install = re.search(r"^\$\(STAMP\): pyproject.toml\n((?:\t.*\n)+)", make, flags=re.M).group(1)
    assert "pip install -e '.[test]'" in install and "apt-get install -y dataset-fashion-mnist" \
        in install and "touch $(STAMP)" in install
    test = re.search(r"^test: \$\(STAMP\)\n\t(.*)$", make, flags=re.M).group(1)
    assert "ruff check" in test and "pytest" in test
    assert re.search(r"^run: \$\(STAMP\)\n\t.*hwsim study run quick$", make, flags=re.M)


# ------------------------------------------------------------------ layering


def test_aihwkit_is_imported_only_under_engine():
    """engine/ is the one home of aihwkit: presets, inference, studies and the report reach it
    only through hwsim.engine."""
    graph = imports_of(ROOT / "hwsim")
    outside = [f"{mod} (line {line})" for mod, edges in graph.items()
               if not mod.startswith("hwsim.engine") for name, line in edges
               if name == "aihwkit" or name.startswith("aihwkit.")]
    assert outside == []


def test_the_import_graph_of_hwsim_has_no_cycle():
    assert find_cycle(imports_of(ROOT / "hwsim")) is None


def test_the_layering_checks_catch_a_planted_violation(tmp_path):
    """The two checks above fail on a package with a cycle and with aihwkit outside engine/."""
    pkg = tmp_path / "hwsim"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("import aihwkit\n")
    (pkg / "a.py").write_text("from hwsim import b\n")
    (pkg / "b.py").write_text("def f():\n    from hwsim.a import x\n    import aihwkit.nn\n")
    graph = imports_of(pkg)
    assert find_cycle(graph) == ["hwsim.a", "hwsim.b", "hwsim.a"]
    assert [(m, n) for m, es in graph.items() for n, _ in es if n.startswith("aihwkit")
            and not m.startswith("hwsim.engine")] == [("hwsim.b", "aihwkit.nn")]
