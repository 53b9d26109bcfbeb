"""Every environment variable the code reads (listed in env_vars.txt, checked against the code) is set by each
deployment kind (CloudFormation user data, Kubernetes manifests, docker-compose.yml) for the
roles that read it, unless env_vars.txt marks it optional. Also the reverse: the deploy files
set no variable that is not on the list (catches typos)."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import COMPOSE, load_rendered

VAR_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.M)
ECHO_LINE = re.compile(r"""echo ['"]([A-Z][A-Z0-9_]*)=""")


def _sub_texts(user_data) -> list[str]:
    """The Fn::Sub string of a launch template's user data plus both branches of every
    Fn::If in its variable map (ConfigLine, SentryLine)."""
    sub = user_data["Fn::Base64"]["Fn::Sub"]
    body, variables = sub
    texts = [body]

    def walk(v):
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
    walk(variables)
    return texts


def cfn_env(template, role: str) -> set[str]:
    """Names written to /etc/wharf/{role}.env by the role's user data."""
    lt = "WebLaunchTemplate" if role == "web" else "WorkerLaunchTemplate"
    texts = _sub_texts(template["Resources"][lt]["Properties"]["LaunchTemplateData"]["UserData"])
    names: set[str] = set()
    body = texts[0]
    heredoc = re.search(rf"cat > /etc/wharf/{role}\.env <<'EOF'\n(.*?)\nEOF\n", body, re.S)
    assert heredoc, f"no /etc/wharf/{role}.env heredoc in {lt}"
    env_text = heredoc.group(1)
    for text in [env_text] + texts[1:]:
        names |= set(VAR_LINE.findall(text))
        names |= set(ECHO_LINE.findall(text))
    names |= {m for m in re.findall(rf'echo "([A-Z][A-Z0-9_]*)=[^\n]*>> /etc/wharf/{role}\.env', body)}
    # ${ConfigLine} / ${SentryLine} must actually be used inside the env file section.
    assert "${ConfigLine}" in env_text
    assert "${SentryLine}" in body
    return names


def k8s_env(docs: list[dict], role: str) -> set[str]:
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"wharf-{role}")
    names: set[str] = set()
    for c in dep["spec"]["template"]["spec"]["containers"]:
        for src in c.get("envFrom", []):
            names |= set(configmaps[src["configMapRef"]["name"]])
        names |= {e["name"] for e in c.get("env", [])}
    return names


def compose_env(role: str) -> set[str]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    names: set[str] = set()
    for svc_name, svc in (data.get("services") or {}).items():
        # Only the services that run the wharf image (built from ./Dockerfile); redis, nginx and the
        # devtools (s3, statsd, built from dev/Dockerfile) have their own variables.
        build = svc.get("build")
        dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        if build is not None:
            if dockerfile != "Dockerfile":
                continue
        elif not re.search(r"(^|/)wharf:", str(svc.get("image", ""))):
            continue
        command = svc.get("command", "")
        command = " ".join(command) if isinstance(command, list) else str(command or "")
        is_worker = "worker" in command or "worker" in svc_name
        if (role == "worker") != is_worker:
            continue
        env = svc.get("environment") or {}
        if isinstance(env, list):
            names |= {e.split("=", 1)[0] for e in env}
        else:
            names |= set(env)
        for f in svc.get("env_file") or []:
            p = COMPOSE.parent / (f if isinstance(f, str) else f["path"])
            if p.exists():
                names |= set(VAR_LINE.findall(p.read_text(encoding="utf-8")))
    return names


def check(env_vars, present_by_role: dict[str, set[str]], where: str):
    missing = [f"{v.name} ({role})" for v in env_vars if v.required
               for role in v.roles if v.name not in present_by_role[role]]
    assert not missing, f"required variables missing from {where}: {missing}"
    known = {v.name for v in env_vars}
    for role, names in present_by_role.items():
        unknown = sorted(names - known)
        assert not unknown, f"{where} ({role}) sets variables not in env_vars.txt: {unknown}"
        wrong_role = sorted(v.name for v in env_vars if v.name in names and role not in v.roles)
        assert not wrong_role, f"{where} ({role}) sets variables of the other role: {wrong_role}"


def test_env_list_has_no_duplicates(env_vars):
    # env_vars.txt itself is generated from the settings declarations; the Rust test
    # crates/wharf-settings/src/tests.rs::generated_deploy_contract fails while it is stale.
    names = [v.name for v in env_vars]
    assert len(names) == len(set(names))


def test_cfn_user_data(template, env_vars):
    present = {role: cfn_env(template, role) for role in ("web", "worker")}
    check(env_vars, present, "CloudFormation user data")
    # Optional variables are the operator's choice: a new setting's default applies until the
    # template sets it, so adding a setting needs no template change (as on Kubernetes).


def test_k8s_manifests(rendered, env_vars):
    env, docs = rendered
    present = {role: k8s_env(docs, role) for role in ("web", "worker")}
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are the AWS chain's own ("AWS_REGION etc").
    present["worker"] -= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    check(env_vars, present, f"Kubernetes rendered/{env}.yaml")


def test_compose():
    from conftest import load_env_vars
    env_vars = load_env_vars()
    present = {role: compose_env(role) for role in ("web", "worker")}
    present["worker"] -= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_ACCESS_KEY"}
    check(env_vars, present, "docker-compose.yml")
    assert not present["web"] & {"S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, \
        "the web service must get no S3 settings or credentials"


def test_secrets_come_from_secret_refs():
    for env in ("stage", "prod"):
        docs = load_rendered(env)
        for cm in (d for d in docs if d["kind"] == "ConfigMap"):
            assert "REDIS_PASSWORD" not in cm.get("data", {})
            assert "SENTRY_DSN" not in cm.get("data", {})
        for dep in (d for d in docs if d["kind"] == "Deployment"):
            env_list = dep["spec"]["template"]["spec"]["containers"][0]["env"]
            by_name = {e["name"]: e for e in env_list}
            for secret in ("REDIS_PASSWORD", "SENTRY_DSN"):
                assert by_name[secret]["valueFrom"]["secretKeyRef"]["name"] == "wharf-secrets"
