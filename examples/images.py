"""Build the example images: stage a small build context, then ``docker build`` it.

Why a staged context instead of ``docker build .`` at the repository root: the images must
build with no package index (the offline demo's base image has python3 and nothing else),
so the two libraries the services import, ecssd's own package (the portal's DNS client)
and dnspython (pure Python), are copied from this machine's installed packages into the
context's ``app/vendor/``. The context also stays small (no .git, no caches), which matters
on a Docker engine with the vfs storage driver.

    python3 -m examples.images build [time calc portal] [--base-image IMAGE] [--docker-host URL]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import docker
import docker.errors

log = logging.getLogger("examples.images")

SERVICES = ("time", "calc", "portal")
EXAMPLES = Path(__file__).resolve().parent
#: Packages copied into every image's app/vendor (import names).
VENDORED = ("ecssd_agent", "dns")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "Dockerfile", "taskdef.json")


class ImageBuildError(RuntimeError):
    """``docker build`` failed; the message carries the end of the build log."""


def image_name(service: str, tag: str = "latest") -> str:
    return f"ecssd-example-{service}:{tag}"


def _package_dir(name: str) -> Path:
    module = importlib.import_module(name)
    if module.__file__ is None:
        raise ImageBuildError(f"cannot find the files of the {name} package")
    return Path(module.__file__).resolve().parent


def stage_context(service: str, dest: Path, vendored: Iterable[str] = VENDORED) -> Path:
    """Fill ``dest`` with the build context of ``service``'s Dockerfile; returns ``dest``.

    ``app/`` is the same for every service (only the Dockerfile differs).
    """
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r} (one of {', '.join(SERVICES)})")
    app = dest / "app"
    (app / "examples").mkdir(parents=True, exist_ok=True)
    shutil.copy2(EXAMPLES / "__init__.py", app / "examples" / "__init__.py")
    # Every service in every image: identical contexts let the build cache share layers.
    for part in ("common", *SERVICES):
        shutil.copytree(EXAMPLES / part, app / "examples" / part, ignore=_IGNORE,
                        dirs_exist_ok=True)
    for name in vendored:
        shutil.copytree(_package_dir(name), app / "vendor" / name, ignore=_IGNORE,
                        dirs_exist_ok=True)
    shutil.copy2(EXAMPLES / service / "Dockerfile", dest / "Dockerfile")
    for path in [dest, *dest.rglob("*")]:  # readable by the image's non-root user
        path.chmod(0o755 if path.is_dir() else 0o644)
        os.utime(path, (0, 0))  # same metadata in every staging: build cache hits
    return dest


def build(client: docker.DockerClient, service: str, base_image: str | None = None,
          tag: str = "latest") -> str:
    """Build ``service``'s image with ``client``'s engine; returns the image name.

    ``base_image`` overrides the Dockerfile's ``BASE_IMAGE`` (python:3.12-slim). The build
    never pulls: the base must already be in the engine (``docker pull`` it, or build the
    offline one), so a missing image fails at once instead of reaching for a registry.
    """
    name = image_name(service, tag)
    with tempfile.TemporaryDirectory(prefix=f"ecssd-{service}-ctx-") as tmp:
        context = stage_context(service, Path(tmp))
        buildargs = {"BASE_IMAGE": base_image} if base_image else {}
        try:
            client.images.build(path=str(context), tag=name, buildargs=buildargs, rm=True,
                                forcerm=True, pull=False)
        except docker.errors.BuildError as exc:
            lines = [str(chunk.get("stream") or chunk.get("error") or "").rstrip()
                     for chunk in exc.build_log]
            tail = "\n".join(line for line in lines if line)[-2000:]
            raise ImageBuildError(f"building {name} failed: {exc.msg}\n{tail}") from exc
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"building {name} failed: {exc}") from exc
    log.info("built %s", name)
    return name


def build_all(client: docker.DockerClient, base_image: str | None = None,
              services: Sequence[str] = SERVICES) -> list[str]:
    return [build(client, service, base_image) for service in services]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m examples.images",
                                     description="Build the example services' images.")
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build images (all three by default)")
    build_cmd.add_argument("services", nargs="*", metavar="SERVICE",
                           help="time, calc and/or portal")
    build_cmd.add_argument("--base-image", default=None,
                           help="base image with python3 (default: the Dockerfile's "
                                "python:3.12-slim, which must be pulled first)")
    build_cmd.add_argument("--docker-host", default=None,
                           help="engine URL (default: DOCKER_HOST, else the local socket)")
    stage_cmd = sub.add_parser("context", help="only stage a build context into DIR")
    stage_cmd.add_argument("service", choices=SERVICES)
    stage_cmd.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "context":
        print(stage_context(args.service, args.dir))
        return 0
    for service in args.services:
        if service not in SERVICES:
            parser.error(f"unknown service {service!r}")
    client = (docker.DockerClient(base_url=args.docker_host) if args.docker_host
              else docker.from_env())
    try:
        for name in build_all(client, args.base_image, args.services or SERVICES):
            print(name)
    except ImageBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
