"""The runbook documents exactly the docker commands the instances run: every `docker run` /
`docker network create` command that starts a line in the CloudFormation user data appears,
character for character, in docs/runbook.md, and the runbook lists no other."""

from __future__ import annotations

from conftest import RUNBOOK, load_cfn


def docker_commands(text: str) -> list[str]:
    out, current = [], None
    for line in text.splitlines():
        if current is not None:
            current.append(line)
        elif line.startswith(("docker run ", "docker network create ")):
            current = [line]
        else:
            continue
        if not line.endswith("\\"):
            out.append("\n".join(current))
            current = None
    return out


def cfn_commands() -> list[str]:
    t = load_cfn()
    cmds = []
    for lt in ("WebLaunchTemplate", "WorkerLaunchTemplate"):
        body = t["Resources"][lt]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"][0]
        cmds += docker_commands(body)
    return cmds


def test_user_data_has_the_role_containers():
    cmds = "\n".join(cfn_commands())
    assert "--name wharf-web" in cmds and '"$WHARF_IMAGE" web' in cmds
    assert "--name wharf-worker" in cmds and '"$WHARF_IMAGE" worker' in cmds
    assert "--name dd-agent" in cmds
    assert "canary --url" in cmds


def test_runbook_has_identical_docker_commands():
    runbook = docker_commands(RUNBOOK.read_text(encoding="utf-8"))
    cfn = cfn_commands()
    assert set(cfn) == set(runbook), {
        "in user data, not in runbook": sorted(set(cfn) - set(runbook)),
        "in runbook, not in user data": sorted(set(runbook) - set(cfn)),
    }
