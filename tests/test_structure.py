"""The package's shape: no import cycle among scoresde modules, no private name used across modules."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scoresde as sd

ROOT = Path(sd.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path):
    """(target module, imported names) of every import not under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(name, path).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for target, names in _imports(name, path):
            subs = {f"{target}.{n}" for n in names} & modules.keys()  # `from . import grids`
            graph[name] |= subs
            if target in modules and (not names or len(subs) < len(names)):
                graph[name].add(target)
    return graph


def test_every_module_imports_in_a_fresh_interpreter():
    names = [m for m in _modules() if m != "scoresde.__main__"]
    code = f"import importlib\nfor m in {names!r}:\n    importlib.import_module(m)\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_no_import_cycle_between_scoresde_modules():
    graph = _graph()
    assert graph["scoresde.sde"] >= {"scoresde.grids", "scoresde.schedules"}  # the walk sees imports
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if m.startswith(n + "."):  # a package is initialized before its submodules: no cycle
                continue
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(n) :], n]))
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_no_module_imports_or_calls_a_private_name_of_another():
    modules = _modules()
    sde_private = {
        n.name for n in ast.walk(ast.parse(modules["scoresde.sde"].read_text())) if isinstance(n, ast.FunctionDef)
    }
    sde_private = {n for n in sde_private if n.startswith("_") and not n.startswith("__")}
    found = set()
    for name, path in modules.items():
        for target, names in _imports(name, path):
            if target.startswith("scoresde") and target != "scoresde._checks":
                found.update((name, n) for n in names if n.startswith("_") and not n.startswith("__"))
        if name != "scoresde.sde":
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in sde_private:
                    found.add((name, node.attr))
    assert found == set()


def test_public_sde_coefficients_agree_with_the_marginal_and_the_reverse_drift():
    t = torch.linspace(0.01, 1.0, 7, dtype=torch.float64)
    for sde in (sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()):
        alpha, sigma = sde.marginal(t)
        assert torch.equal(sde.alpha(t), alpha) and torch.equal(sde.sigma(t), sigma)
        torch.testing.assert_close(sde.log_snr(t), 2 * torch.log(alpha / sigma))
        torch.testing.assert_close(sde.g2(t), sde.diffusion(t) ** 2)
        assert torch.equal(sde.diffusion_squared(t, check=False), sde.g2(t))
        log_a, var = sde.transition(t[:-1], t[1:])  # Gaussian composition of the marginals
        torch.testing.assert_close(sigma[1:] ** 2, torch.exp(2 * log_a) * sigma[:-1] ** 2 + var)
        # f = d log α/dt (finite differences)
        h = 1e-6
        fd = (torch.log(sde.alpha(t[1:-1] + h)) - torch.log(sde.alpha(t[1:-1] - h))) / (2 * h)
        torch.testing.assert_close(sde.drift_coef(t[1:-1]), fd, rtol=1e-6, atol=1e-8)
        x = torch.randn(7, 3, dtype=torch.float64)
        for flow, c in ((False, 1.0), (True, 0.5)):
            rev = sde.reverse(lambda x, t: -x, probability_flow=flow)
            f, cg2 = rev.drift_coefs(t)
            torch.testing.assert_close(cg2, c * sde.g2(t))
            torch.testing.assert_close(rev.drift(x, t), f[:, None] * x + cg2[:, None] * x)
        with pytest.raises(ValueError, match=r"lie in \[0, T\]"):
            sde.sigma(torch.tensor([1.5], dtype=torch.float64))


def test_time_grids_have_one_home():
    from scoresde import grids, schedules

    assert sd.time_grid is grids.time_grid and sd.TIME_GRIDS is grids.TIME_GRIDS
    assert not hasattr(schedules, "time_grid") and not hasattr(schedules, "TIME_GRIDS")
