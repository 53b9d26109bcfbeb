"""Shared fixtures for the deploy-kit tests: repo paths, a CloudFormation-aware YAML loader,
the env-var list (env_vars.txt) and the rendered Kubernetes manifests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CFN_TEMPLATE = ROOT / "deploy" / "aws" / "wharf.yaml"
RENDERED = ROOT / "deploy" / "k8s" / "rendered"
RUNBOOK = ROOT / "docs" / "runbook.md"
COMPOSE = ROOT / "docker-compose.yml"

sys.path.insert(0, str(ROOT / "deploy" / "aws"))


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags (!Ref, !Sub, !GetAtt, !If ...) into
    their long forms ({"Ref": x}, {"Fn::Sub": x}, {"Fn::GetAtt": [res, attr]} ...)."""


def _cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_cfn(path: Path = CFN_TEMPLATE) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=CfnLoader)


@pytest.fixture(scope="session")
def template() -> dict:
    return load_cfn()


class EnvVar:
    def __init__(self, name: str, role: str, need: str):
        assert role in ("web", "worker", "both"), role
        assert need in ("required", "optional"), need
        self.name, self.role, self.need = name, role, need

    @property
    def roles(self) -> tuple[str, ...]:
        return ("web", "worker") if self.role == "both" else (self.role,)

    @property
    def required(self) -> bool:
        return self.need == "required"

    def __repr__(self) -> str:
        return f"{self.name}({self.role},{self.need})"


def load_env_vars() -> list[EnvVar]:
    out = []
    for line in (HERE / "env_vars.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(EnvVar(*line.split()))
    return out


@pytest.fixture(scope="session")
def env_vars() -> list[EnvVar]:
    return load_env_vars()


def load_rendered(env: str) -> list[dict]:
    with open(RENDERED / f"{env}.yaml", encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


# Every rendered overlay (stage, prod, prod-cluster ...): deploy/k8s/render writes one per overlay.
RENDERED_ENVS = sorted(p.stem for p in RENDERED.glob("*.yaml"))


@pytest.fixture(scope="session", params=RENDERED_ENVS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, load_rendered(request.param)


def pytest_report_header(config):
    return [f"deploy kit root: {ROOT}", f"docker-compose.yml present: {os.path.exists(COMPOSE)}"]
