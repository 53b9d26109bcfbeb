"""Every container image the repository refers to is either a Docker official image or built from
this repository, and every image that is pulled has a pinned version tag.

Why: a third-party image can vanish from its registry (MinIO deleted minio/minio and minio/mc
from Docker Hub in September 2026, and `docker compose up` failed for every new user) or change
under a floating tag. Official images are maintained by Docker and the upstream projects; ours we
build ourselves.

Where images are referred to: docker-compose.yml (`image:`, with `${VAR:-default}` resolved to
its default), every Dockerfile in the repository (FROM, COPY --from, and the defaults of the ARGs
they use), and deploy/k8s (base, overlays and the rendered manifests).

Pinned means a digest, or a tag carrying the full version in the image's own scheme: three
numeric parts (`7.0.15-bookworm`, `1.27.5-bookworm`, `1.95.0-bookworm`, our `0.0.0-unset`), two
for Debian, whose point releases have two (`12.12-slim`). Not pinned: no tag, `latest`, `7`,
`1.27`, `7-bookworm`, `bookworm-slim`. A compose service with `build:` is built here, never
pulled, so its local tag (`wharf:local`) is exempt.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from conftest import COMPOSE, ROOT

FULL_VERSION = re.compile(r"^v?\d+\.\d+\.\d+")
# Docker official images (hub.docker.com/_/<name>) the repository uses, and what a pinned tag of
# each looks like. Adding one is a decision: add it here, in the same change.
OFFICIAL = {
    "redis": FULL_VERSION,
    "nginx": FULL_VERSION,
    "rust": FULL_VERSION,
    "debian": re.compile(r"^\d+\.\d+"),
}
# Images built from this repository: Dockerfile -> wharf, dev/Dockerfile -> wharf-devtools.
OURS = {"wharf", "wharf-devtools"}
K8S = ROOT / "deploy" / "k8s"
SKIP_DIRS = {".git", "target", "prebuilt", "node_modules", "__pycache__", ".pytest_cache"}


@dataclass(frozen=True)
class Ref:
    image: str
    where: str
    # a compose service with `build:` names the image it builds; it is never pulled
    built_here: bool = False


def split(image: str) -> tuple[str, str, str | None, str | None]:
    """(registry, repository path, tag, digest) of an image reference."""
    rest, _, digest = image.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", rest
    path, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    return registry, path, (tag if colon else None), (digest or None)


def problem(ref: Ref) -> str | None:
    """Why `ref` is not allowed, or None."""
    if "$" in ref.image:
        return f"{ref.where}: {ref.image!r} depends on a variable without a default"
    registry, path, tag, digest = split(ref.image)
    if registry == "docker.io":
        name = path.removeprefix("library/")
        official = "/" not in name and name in OFFICIAL
        ours = ref.built_here or ("/" not in name and name in OURS)
    else:
        # a private registry (ECR, registry.example.com) holding the image we build
        name = path.rsplit("/", 1)[-1]
        official = False
        ours = name in OURS
    if not (official or ours):
        return (f"{ref.where}: {ref.image!r} is neither a Docker official image "
                f"({', '.join(sorted(OFFICIAL))}) nor built from this repository")
    if ref.built_here or digest:
        return None
    pinned = OFFICIAL[name] if official else FULL_VERSION
    if tag is None or not pinned.match(tag):
        return f"{ref.where}: {ref.image!r} has no pinned version tag (like 7.0.15-bookworm)"
    return None


# ---------------------------------------------------------------- where images are referred to

VAR_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-([^}]*)\}")


def compose_refs(data: dict, where: str = "docker-compose.yml") -> list[Ref]:
    refs = []
    for name, service in (data.get("services") or {}).items():
        image = service.get("image")
        if image:
            # what compose uses when the variable is unset
            resolved = VAR_DEFAULT.sub(lambda m: m.group(2), str(image))
            refs.append(Ref(resolved, f"{where} service {name}", built_here="build" in service))
    return refs


def dockerfile_paths() -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".venv")]
        for f in filenames:
            if f in ("Dockerfile", "Containerfile") or f.startswith("Dockerfile.") or f.endswith(".Dockerfile"):
                found.append(Path(dirpath) / f)
    return sorted(found)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, args = buf.partition(" ")
        out.append((word.upper(), args.strip()))
        buf = ""
    return out


ARG_USE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}?")


def dockerfile_refs(text: str, where: str) -> list[Ref]:
    args: dict[str, str | None] = {}
    stages: set[str] = set()
    refs = []

    def resolve(value: str) -> str:
        def sub(m: re.Match) -> str:
            default = args.get(m.group(1))
            if default is None:
                default = m.group(2)
            return default if default is not None else m.group(0)
        return ARG_USE.sub(sub, value)

    for word, rest in instructions(text):
        if word == "ARG":
            for part in rest.split():
                name, eq, default = part.partition("=")
                # a stage's own ARG without a default keeps the global default
                if eq or name not in args:
                    args[name] = default.strip("\"'") if eq else None
                if eq and name.endswith("IMAGE"):
                    refs.append(Ref(resolve(args[name] or ""), f"{where} ARG {name} default"))
        elif word == "FROM":
            tokens = [t for t in rest.split() if not t.startswith("--")]
            image = resolve(tokens[0])
            if len(tokens) >= 3 and tokens[1].upper() == "AS":
                stages.add(tokens[2])
            if image not in stages and image != "scratch":
                refs.append(Ref(image, f"{where} FROM {tokens[0]}"))
        elif word in ("COPY", "ADD"):
            for flag in rest.split():
                if flag.startswith("--from="):
                    source = resolve(flag.split("=", 1)[1])
                    if source not in stages and not source.isdigit():
                        refs.append(Ref(source, f"{where} {word} {flag}"))
    return refs


def find_images(node, where: str) -> list[Ref]:
    """Every `image:` value of a Kubernetes object, and kustomize `images:` entries."""
    refs = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                refs.append(Ref(value, where))
            elif key == "images" and isinstance(value, list) and all(isinstance(v, dict) for v in value):
                for entry in value:
                    name = entry.get("newName") or entry.get("name")
                    if "digest" in entry:
                        refs.append(Ref(f"{name}@{entry['digest']}", f"{where} images"))
                    else:
                        tag = entry.get("newTag")
                        refs.append(Ref(f"{name}:{tag}" if tag is not None else name, f"{where} images"))
            else:
                refs += find_images(value, where)
    elif isinstance(node, list):
        for item in node:
            refs += find_images(item, where)
    return refs


def k8s_refs() -> list[Ref]:
    refs = []
    for path in sorted(K8S.rglob("*.yaml")):
        with open(path, encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                refs += find_images(doc, str(path.relative_to(ROOT)))
    return refs


def all_refs() -> list[Ref]:
    refs = compose_refs(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))
    for path in dockerfile_paths():
        refs += dockerfile_refs(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return refs + k8s_refs()


# ---------------------------------------------------------------- tests

def test_every_image_is_official_or_ours_and_pinned():
    refs = all_refs()
    print("\n".join(f"{r.image:45} {r.where}" for r in refs))
    problems = [p for p in map(problem, refs) if p]
    assert not problems, "images that may vanish or move:\n  " + "\n  ".join(problems)


def test_every_place_is_looked_at():
    """The lint only means something if it finds the images: each kind of file contributes."""
    refs = all_refs()
    wheres = {r.where.split()[0] for r in refs}
    assert {"docker-compose.yml", "Dockerfile", "dev/Dockerfile"} <= wheres, wheres
    assert any(w.startswith("deploy/k8s/base/") for w in wheres), wheres
    assert any(w.startswith("deploy/k8s/overlays/") for w in wheres), wheres
    assert any(w.startswith("deploy/k8s/rendered/") for w in wheres), wheres
    images = {r.image for r in refs}
    for expected in ("redis:7.0.15-bookworm", "nginx:1.27.5-bookworm", "rust:1.95.0-bookworm",
                     "debian:12.12-slim"):
        assert expected in images, f"{expected} not found: the lint's parsing is off"


def test_third_party_and_floating_images_are_refused():
    compose = {"services": {
        "s3": {"image": "minio/minio"},
        "s3-init": {"image": "minio/mc:RELEASE.2025-08-13T08-35-41Z"},
        "statsd": {"image": "alpine/socat:1.8.0.0"},
        "redis": {"image": "redis:7-bookworm"},
        "cache": {"image": "redis:latest"},
        "proxy-minor": {"image": "nginx:1.27"},
        "proxy": {"image": "nginx"},
        "hub-user": {"image": "someone/wharf:1.0.0"},
        "env": {"image": "${WHARF_IMAGE}"},
    }}
    dockerfile = (
        "ARG BASE=debian:bookworm-slim\n"
        "FROM ${BASE} AS one\n"
        "FROM one AS two\n"
        "COPY --from=busybox:1.36.1 /bin/sh /sh\n"
    )
    refs = compose_refs(compose, "compose") + dockerfile_refs(dockerfile, "Dockerfile")
    refused = {r.image for r in refs if problem(r)}
    assert refused == {
        "minio/minio", "minio/mc:RELEASE.2025-08-13T08-35-41Z", "alpine/socat:1.8.0.0",
        "redis:7-bookworm", "redis:latest", "nginx:1.27", "nginx", "someone/wharf:1.0.0", "${WHARF_IMAGE}",
        "debian:bookworm-slim", "busybox:1.36.1",
    }, refused


def test_official_pinned_and_our_own_images_pass():
    compose = {"services": {
        "redis": {"image": "redis:7.0.15-bookworm"},
        "proxy": {"image": "docker.io/library/nginx:1.27.5-bookworm"},
        "web": {"build": {"context": "."}, "image": "${WHARF_IMAGE:-wharf:local}"},
        "s3": {"build": {"context": "."}, "image": "wharf-devtools:local"},
        "pinned": {"image": "debian@sha256:" + "0" * 64},
    }}
    k8s = {"spec": {"containers": [
        {"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/wharf:1.4.2"},
        {"image": "registry.example.com/wharf:0.0.0-unset"},
    ]}}
    refs = compose_refs(compose, "compose") + find_images(k8s, "k8s")
    assert [problem(r) for r in refs] == [None] * len(refs)
