"""The stack-name rule of seed 002, adapted to Wharf: wh-{name}-{NNNN}-{level}, <= 32 chars."""

import subprocess
import sys

import pytest
import stackname

from conftest import ROOT

VALID = [
    "wh-telemetry-0001-prod",
    "wh-telemetry-0001-stage",
    "wh-eu1-0042-dev",
    "wh-x-9999-test",
    "wh-a1b2-0001-prod",
    "wh-abcdefghijklmnopqr-0001-stage",  # exactly 32 characters
]

INVALID = {
    "": "empty",
    "cq-eth-0001-prod": "wrong service",
    "WH-telemetry-0001-prod": "uppercase service",
    "wh-Telemetry-0001-prod": "uppercase name",
    "wh-tele_metry-0001-prod": "underscore in name",
    "wh-tele-metry-0001-prod": "dash in name (five parts)",
    "wh--0001-prod": "empty name",
    "wh-telemetry-0000-prod": "stack number 0000",
    "wh-telemetry-001-prod": "three digits",
    "wh-telemetry-10000-prod": "five digits",
    "wh-telemetry-00a1-prod": "non-digit number",
    "wh-telemetry-0001-production": "unknown level",
    "wh-telemetry-0001-Prod": "uppercase level",
    "wh-telemetry-0001": "missing level",
    "wh-telemetry-0001-prod-": "trailing dash",
    "wh-abcdefghijklmnopqrs-0001-stage": "33 characters",
    " wh-telemetry-0001-prod": "leading space",
}


@pytest.mark.parametrize("name", VALID)
def test_accepts(name):
    assert len(name) <= 32
    parsed = stackname.parse(name)
    assert str(parsed) == name
    assert parsed.service == "wh"


@pytest.mark.parametrize("name,why", INVALID.items())
def test_rejects(name, why):
    with pytest.raises(stackname.InvalidStackName):
        stackname.parse(name)
    assert not stackname.is_valid(name), why


def test_lists_every_problem():
    with pytest.raises(stackname.InvalidStackName) as err:
        stackname.parse("xx-Bad-0000-live")
    assert len(err.value.problems) == 4


def test_prod_flag():
    assert stackname.parse("wh-telemetry-0001-prod").is_prod
    assert not stackname.parse("wh-telemetry-0001-stage").is_prod


def test_deploy_script_validate_name():
    deploy = ROOT / "deploy" / "aws" / "deploy"
    ok = subprocess.run([sys.executable, str(deploy), "validate-name", "wh-telemetry-0001-prod"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, str(deploy), "validate-name", "wh-telemetry-1-prod"],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "stack number" in bad.stderr


def test_deploy_dry_run_makes_no_aws_call(tmp_path):
    """--dry-run prints the AWS CLI commands; with no `aws` on PATH it must still succeed."""
    deploy = ROOT / "deploy" / "aws" / "deploy"
    params = ROOT / "deploy" / "aws" / "params" / "example.json"
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, str(deploy), "deploy", "wh-telemetry-0001-prod",
                          "--image", "registry.example.com/wharf:1.0.0", "--params", str(params),
                          "--region", "us-east-1", "--dry-run"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for expected in ("cloudformation validate-template", "cloudformation create-stack",
                     "stack-create-complete", "--enable-termination-protection",
                     "/usr/local/bin/wharf-canary", "route53 change-resource-record-sets"):
        assert expected in out, expected


def test_deploy_rejects_bad_name_before_any_call():
    deploy = ROOT / "deploy" / "aws" / "deploy"
    run = subprocess.run([sys.executable, str(deploy), "deploy", "wharf-prod", "--image", "x",
                          "--params", "/nonexistent", "--dry-run"], capture_output=True, text=True)
    assert run.returncode == 2
    assert "+ aws" not in run.stdout
