#!/usr/bin/env python3
"""Build ``dist/ecssd-lambda.zip``: the Lambda functions and exactly the code they import.

``make package`` runs this. One zip serves every function of the CloudFormation quickstart
(``health_lambda.handler.lambda_handler``, ``health_lambda.task_events.lambda_handler`` and,
in the queued mode, ``health_lambda.zone_writer_handler.lambda_handler``).

Why an import graph instead of a fixed file list: the Lambdas share the agent's core
(``ecssd_agent``), and that package also holds the per-host agent, which talks to Docker.
Walking the ``import`` statements from every module of ``health_lambda`` (with ``ast``, no
code is executed) yields the core modules the Lambdas really reach and the third-party
distributions they need, so the zip can neither miss a module nor drag the Docker SDK in.
The build fails when a Lambda module reaches ``docker`` (the Lambda runtime has no Docker
engine, and the SDK is large).

Third-party code: the Python Lambda runtime ships boto3 and its dependencies (botocore,
s3transfer, jmespath, python-dateutil, six, urllib3); everything else reached is vendored
into the zip from PyPI as pure-Python wheels (``pip install --target --no-deps
--only-binary=:all:``), pinned to the versions installed here, which are the versions the
tests ran with. The dependency closure is read from the installed distributions' metadata.

Reproducible: entries are sorted, timestamps fixed (``SOURCE_DATE_EPOCH`` or 1980-01-01),
permissions normalised, no ``__pycache__``; the same tree and versions give the same bytes.
A manifest (``ecssd-lambda.json``) inside the zip lists the modules and vendored versions.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata as md
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "dist" / "ecssd-lambda.zip"
MANIFEST_NAME = "ecssd-lambda.json"

#: The packages of this repository that may go into the zip.
PROJECT_PACKAGES = ("health_lambda", "ecssd_agent")
#: Every module of this package is a Lambda entry point (or used by one).
LAMBDA_PACKAGE = "health_lambda"
#: The Python runtime's own libraries: boto3 and whatever it depends on.
RUNTIME_ROOTS = ("boto3",)
#: Third-party modules a Lambda must never import.
FORBIDDEN = {"docker": "the Lambda runtime has no Docker engine; keep Docker code in the agent"}
#: The Lambda runtime's Python (for environment markers and wheel selection).
LAMBDA_PYTHON = "3.12"


class PackagingError(RuntimeError):
    """The zip cannot be built as asked; the message says what to change."""


# --- the import graph ----------------------------------------------------------------------


@dataclass
class ImportGraph:
    """Project modules reached from the Lambda package, and the third-party names they use."""

    modules: dict[str, Path] = field(default_factory=dict)
    #: third-party top-level module -> one project module importing it (for messages)
    third_party: dict[str, str] = field(default_factory=dict)
    #: project module -> the project module that first imported it
    parent: dict[str, str] = field(default_factory=dict)

    def chain(self, module: str) -> list[str]:
        """The import chain from an entry module down to ``module``."""
        out = [module]
        while out[-1] in self.parent:
            out.append(self.parent[out[-1]])
        return list(reversed(out))


def module_path(root: Path, name: str) -> Path | None:
    """The source file of project module ``name`` under ``root`` (package or module)."""
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Absolute names a module imports: ``import a.b``, ``from a import b`` (a.b may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                if node.level > 1:
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            yield base
            for alias in node.names:
                if alias.name != "*":
                    yield f"{base}.{alias.name}"


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_graph(root: Path = ROOT, package: str = LAMBDA_PACKAGE,
                 project: Iterable[str] = PROJECT_PACKAGES) -> ImportGraph:
    """Walk imports from every module of ``package``; importing a.b.c runs a/__init__ and a/b/__init__."""
    project = tuple(project)
    graph = ImportGraph()
    pkg_dir = root / package
    if not (pkg_dir / "__init__.py").is_file():
        raise PackagingError(f"{pkg_dir} is not a package")
    todo = sorted(
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for p in pkg_dir.rglob("*.py") if "__pycache__" not in p.parts
    )
    stdlib = set(sys.stdlib_module_names)
    while todo:
        name = todo.pop()
        if name in graph.modules:
            continue
        path = module_path(root, name)
        if path is None:
            continue  # "from pkg import function": not a module
        graph.modules[name] = path
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imported in _imported_names(tree, name, path.name == "__init__.py"):
            top = imported.partition(".")[0]
            if top in project:
                for candidate in _with_parents(imported):
                    if candidate not in graph.modules and module_path(root, candidate):
                        graph.parent.setdefault(candidate, name)
                        todo.append(candidate)
            elif top and top not in stdlib:
                graph.third_party.setdefault(top, name)
        for parent in _with_parents(name)[:-1]:
            if parent not in graph.modules:
                graph.parent.setdefault(parent, name)
                todo.append(parent)
    return graph


# --- third-party distributions ---------------------------------------------------------------

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_env() -> dict[str, str]:
    """Environment markers of the Lambda runtime (Linux, CPython LAMBDA_PYTHON)."""
    return {
        "python_version": LAMBDA_PYTHON, "python_full_version": f"{LAMBDA_PYTHON}.0",
        "implementation_name": "cpython", "platform_python_implementation": "CPython",
        "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
        "platform_machine": "x86_64", "extra": "",
    }


def _requirement_applies(requirement: str) -> bool:
    """True unless the requirement's environment marker excludes the Lambda runtime."""
    _, sep, marker = requirement.partition(";")
    if not sep:
        return True
    try:
        import packaging.markers as markers
    except ImportError:  # pip carries its own copy wherever pip is installed
        import pip._vendor.packaging.markers as markers  # type: ignore[no-redef]
    return bool(markers.Marker(marker.strip()).evaluate(_marker_env()))


def requirements(dist: str) -> list[str]:
    """Canonical names of the installed distribution's runtime requirements."""
    try:
        requires = md.requires(dist) or []
    except md.PackageNotFoundError as exc:
        raise PackagingError(f"{dist} is not installed here; pip install it first") from exc
    out = []
    for req in requires:
        match = _NAME.match(req)
        if match and _requirement_applies(req):
            out.append(canonical(match.group(1)))
    return out


def closure(roots: Iterable[str]) -> set[str]:
    """The roots and every distribution they require (transitively), canonical names."""
    seen: set[str] = set()
    todo = [canonical(r) for r in roots]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        todo.extend(requirements(dist))
    return seen


def distributions_for(modules: Mapping[str, str],
                      dist_map: Mapping[str, list[str]] | None = None) -> set[str]:
    """Distributions (canonical) that provide the given top-level modules."""
    dist_map = md.packages_distributions() if dist_map is None else dist_map
    found: set[str] = set()
    for top, importer in sorted(modules.items()):
        dists = dist_map.get(top)
        if not dists:
            raise PackagingError(f"{importer} imports {top!r}, which no installed distribution "
                                 "provides; install it (and add it to pyproject.toml)")
        found.update(canonical(d) for d in dists)
    return found


@dataclass(frozen=True)
class Plan:
    """What goes into the zip."""

    modules: dict[str, Path]
    vendored: dict[str, str]  # canonical distribution -> pinned version
    runtime: tuple[str, ...]  # provided by the Lambda runtime, not shipped


def make_plan(root: Path = ROOT) -> Plan:
    graph = import_graph(root)
    for top, reason in FORBIDDEN.items():
        if top in graph.third_party:
            chain = " -> ".join(graph.chain(graph.third_party[top]))
            raise PackagingError(f"a Lambda module imports {top!r} ({chain} imports {top}): "
                                 f"{reason}")
    runtime = closure(RUNTIME_ROOTS)
    needed = closure(distributions_for(graph.third_party)) - runtime
    vendored = {dist: md.version(dist) for dist in sorted(needed)}
    return Plan(modules=graph.modules, vendored=vendored, runtime=tuple(sorted(runtime)))


# --- building the zip ------------------------------------------------------------------------


def vendor(pins: Mapping[str, str], target: Path) -> None:
    """``pip install --target`` pure-Python wheels of exactly these versions, nothing else."""
    if not pins:
        return
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(target), "--no-deps", "--no-compile", "--only-binary=:all:",
        "--platform", "any", "--implementation", "py", "--python-version", LAMBDA_PYTHON,
        *[f"{dist}=={version}" for dist, version in sorted(pins.items())],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise PackagingError(f"pip could not vendor {dict(pins)} as pure-Python wheels:\n"
                             f"{proc.stderr.strip()}")
    compiled = sorted(str(p.relative_to(target)) for p in target.rglob("*")
                      if p.suffix in {".so", ".pyd", ".dylib"})
    if compiled:
        raise PackagingError(f"vendored code is not pure Python: {compiled}")


def _epoch() -> tuple[int, int, int, int, int, int]:
    """Zip timestamp: SOURCE_DATE_EPOCH when set (reproducible builds), else 1980-01-01."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw:
        stamp = max(int(raw), 315532800)  # zip cannot store dates before 1980
        return tuple(time.gmtime(stamp)[:6])  # type: ignore[return-value]
    return (1980, 1, 1, 0, 0, 0)


def _skip(relative: Path) -> bool:
    return ("__pycache__" in relative.parts or relative.suffix in {".pyc", ".pyo"}
            or relative.parts[0] == "bin")


def zip_entries(plan: Plan, vendor_dir: Path | None, root: Path = ROOT) -> dict[str, bytes]:
    """Archive name -> content."""
    entries: dict[str, bytes] = {}
    for path in plan.modules.values():
        entries[path.relative_to(root).as_posix()] = path.read_bytes()
    if vendor_dir is not None:
        for path in sorted(vendor_dir.rglob("*")):
            relative = path.relative_to(vendor_dir)
            if path.is_file() and not _skip(relative):
                arcname = relative.as_posix()
                if arcname.split("/")[0] in PROJECT_PACKAGES:
                    raise PackagingError(f"a vendored distribution ships {arcname}")
                entries[arcname] = path.read_bytes()
    manifest = {
        "modules": sorted(plan.modules),
        "vendored": plan.vendored,
        "runtime_provided": list(plan.runtime),
        "handlers": sorted(f"{m}.lambda_handler" for m, p in plan.modules.items()
                           if m.startswith(LAMBDA_PACKAGE + ".")
                           and "def lambda_handler(" in p.read_text(encoding="utf-8")),
        "python": LAMBDA_PYTHON,
    }
    entries[MANIFEST_NAME] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return entries


def write_zip(entries: Mapping[str, bytes], output: Path) -> str:
    """Write deterministically (atomic rename); return the sha256."""
    stamp = _epoch()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100644 & 0xFFFF) << 16
            info.create_system = 3  # unix, so the mode above is honoured everywhere
            archive.writestr(info, entries[name], compresslevel=9)
    data = buffer.getvalue()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, output)
    return hashlib.sha256(data).hexdigest()


def build(output: Path = DEFAULT_OUTPUT, root: Path = ROOT) -> tuple[Plan, str]:
    plan = make_plan(root)
    with tempfile.TemporaryDirectory(prefix="ecssd-lambda-") as tmp:
        vendor_dir = Path(tmp) / "vendor" if plan.vendored else None
        if vendor_dir is not None:
            vendor(plan.vendored, vendor_dir)
        digest = write_zip(zip_entries(plan, vendor_dir, root), output)
    return plan, digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"zip to write (default {DEFAULT_OUTPUT.relative_to(ROOT)})")
    parser.add_argument("--plan", action="store_true",
                        help="print what would be packaged (JSON) and build nothing")
    args = parser.parse_args(argv)
    try:
        if args.plan:
            plan = make_plan()
            print(json.dumps({"modules": sorted(plan.modules), "vendored": plan.vendored,
                              "runtime_provided": list(plan.runtime)}, indent=2))
            return 0
        plan, digest = build(args.output)
    except PackagingError as exc:
        print(f"package_lambda: {exc}", file=sys.stderr)
        return 1
    vendored = ", ".join(f"{d}=={v}" for d, v in plan.vendored.items()) or "nothing"
    print(f"{args.output}: {len(plan.modules)} modules, vendored {vendored}; sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
