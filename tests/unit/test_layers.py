"""The layout is the architecture: each subpackage of ``ecssd_agent`` is a layer, and a layer
imports only the layers below it.

Why a test: the pure core is what makes the plan table-testable and the dry runs honest; one
``import boto3`` slipped into it would make every unit test of it an AWS test. And a layer that
reaches upward (the writer importing the agent) is how the flat layout grew its two-mode objects.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ecssd_agent"

#: layer -> the layers it may import. "top" is ecssd_agent's own top-level modules
#: (config_fields, logs, http_deadline): shared by every entry point, importing none of ours.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "aws": {"core", "top"},
    "sync": {"core", "aws", "top"},
    "dns": {"core", "aws", "top"},
    "writer": {"core", "aws", "sync", "top"},
    "agent": {"core", "aws", "sync", "writer", "top"},
    "sweep": {"core", "aws", "top"},
    "events": {"core", "aws", "sync", "top"},
    "top": set(),
    "entry": {"agent"},  # ecssd_agent/__main__.py runs the agent's CLI
    # the three Lambda entry points and their shared runtime: wiring only
    "health_lambda": {"core", "aws", "writer", "sweep", "events", "top", "health_lambda"},
}
#: Third-party packages that do I/O: none of them in the core.
IO_PACKAGES = {"boto3", "botocore", "docker", "requests", "urllib3", "http", "socket"}


def _layer(path: Path) -> str:
    if path.is_relative_to(ROOT / "health_lambda"):
        return "health_lambda"
    parts = path.relative_to(PACKAGE).parts
    if parts == ("__main__.py",):
        return "entry"
    return parts[0] if len(parts) > 1 else "top"


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ecssd_agent":
                yield from (f"ecssd_agent.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _target_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "health_lambda":
        return "health_lambda"
    if parts[0] != "ecssd_agent" or len(parts) < 2:
        return None
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "top"


def _sources() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(ROOT / "health_lambda").rglob("*.py")])


def test_every_module_is_in_a_known_layer() -> None:
    assert {_layer(p) for p in _sources()} <= set(ALLOWED)


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("core/*.py")), ids=lambda p: p.name)
def test_core_does_no_io(path: Path) -> None:
    bad = [m for m in _imports(path) if m.split(".")[0] in IO_PACKAGES]
    assert not bad, f"{path.name} is core (pure) but imports {bad}"


def test_layers_import_only_downward() -> None:
    violations = []
    for path in _sources():
        layer = _layer(path)
        for module in _imports(path):
            target = _target_layer(module)
            if target is None or target == layer:
                continue
            if target not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(ROOT)} ({layer}) imports {module} ({target})")
    assert not violations, "\n".join(violations)


def test_the_layer_graph_has_no_cycle() -> None:
    seen: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(layer: str, stack: list[str]) -> None:
        seen[layer] = 1
        for below in ALLOWED[layer] - {layer}:
            assert seen.get(below) != 1, f"layer cycle: {' -> '.join([*stack, layer, below])}"
            if below not in seen:
                visit(below, [*stack, layer])
        seen[layer] = 2

    for layer in ALLOWED:
        if layer not in seen:
            visit(layer, [])


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import reader finds what it must (else the tests above pass vacuously)."""
    sample = tmp_path / "m.py"
    sample.write_text("import boto3\nfrom ecssd_agent import logs\nfrom ecssd_agent.aws import route53\n")
    assert list(_imports(sample)) == ["boto3", "ecssd_agent.logs", "ecssd_agent.aws"]
    assert _target_layer("ecssd_agent.aws.route53") == "aws"
    assert _target_layer("ecssd_agent.logs") == "top"
