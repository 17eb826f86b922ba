"""Which Debian mirror this machine's apt uses (for debootstrap).

Why not hard-code deb.debian.org: CI and developer machines may only reach a local
mirror or proxy that apt is configured for. Reads one-line ``sources.list`` entries and
deb822 ``*.sources`` files; ECSSD_DEBIAN_MIRROR overrides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_DIR = Path("/etc/apt")
_SCHEMES = ("http://", "https://", "file:/")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]


def _one_line_sources(text: str) -> list[AptSource]:
    found: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            found.append(AptSource(words[0], (words[1],)))
    return found


def _deb822_sources(text: str) -> list[AptSource]:
    found: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        found.extend(AptSource(uri, suites) for uri in fields.get("uris", "").split())
    return found


def apt_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    """All enabled ``deb`` sources, in apt's file order."""
    sources: list[AptSource] = []
    main_list = apt_dir / "sources.list"
    if main_list.is_file():
        sources += _one_line_sources(main_list.read_text(errors="replace"))
    for path in sorted((apt_dir / "sources.list.d").glob("*")):
        if path.suffix == ".list":
            sources += _one_line_sources(path.read_text(errors="replace"))
        elif path.suffix == ".sources":
            sources += _deb822_sources(path.read_text(errors="replace"))
    return sources


def debian_mirror(suite: str, apt_dir: Path = APT_DIR) -> str:
    """The mirror URI serving ``suite``; else any main-archive Debian URI; else default."""
    override = os.environ.get("ECSSD_DEBIAN_MIRROR")
    if override:
        return override
    usable = [s for s in apt_sources(apt_dir) if s.uri.startswith(_SCHEMES)]
    for source in usable:
        if suite in source.suites:
            return source.uri
    for source in usable:  # same archive, other release: it still serves `suite`
        if source.uri.rstrip("/").endswith("/debian") and not any(
            s.endswith("-security") for s in source.suites
        ):
            return source.uri
    return DEFAULT_MIRROR
