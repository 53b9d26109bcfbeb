"""Kubernetes manifests: roles, probes, non-root hardening, graceful shutdown, autoscaling."""

from __future__ import annotations


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def configmap_value(docs, deployment, key):
    cms = by_kind(docs, "ConfigMap")
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        for src in c.get("envFrom", []):
            data = cms[src["configMapRef"]["name"]].get("data", {})
            if key in data:
                value = data[key]
    return value


def test_one_image_two_roles(rendered):
    _, docs = rendered
    deps = by_kind(docs, "Deployment")
    assert set(deps) == {"wharf-web", "wharf-worker"}
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deps.values()}
    assert len(images) == 1
    assert deps["wharf-web"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["web"]
    assert deps["wharf-worker"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]


def test_probes(rendered):
    _, docs = rendered
    web = by_kind(docs, "Deployment")["wharf-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/__lbheartbeat__"
    assert web["readinessProbe"]["httpGet"]["path"] == "/__heartbeat__"


def test_hardening(rendered):
    _, docs = rendered
    for dep in by_kind(docs, "Deployment").values():
        spec = dep["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["runAsGroup"] == 10001
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_worker_grace_covers_shutdown(rendered):
    _, docs = rendered
    worker = by_kind(docs, "Deployment")["wharf-worker"]
    grace_ms = int(configmap_value(docs, worker, "SHUTDOWN_GRACE_MS"))
    period = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert period * 1000 >= grace_ms + 5000, (period, grace_ms)
    web = by_kind(docs, "Deployment")["wharf-web"]
    web_grace = int(configmap_value(docs, web, "SHUTDOWN_GRACE_MS"))
    assert web["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] * 1000 > web_grace


def test_autoscaling(rendered):
    _, docs = rendered
    assert by_kind(docs, "HorizontalPodAutoscaler")["wharf-web"]["spec"]["scaleTargetRef"]["name"] == "wharf-web"
    so = by_kind(docs, "ScaledObject")["wharf-worker"]
    assert so["spec"]["scaleTargetRef"]["name"] == "wharf-worker"
    redis = [t for t in so["spec"]["triggers"] if t["type"] == "redis"]
    assert redis and redis[0]["metadata"]["listName"] == "wharf_submissions:active"
    assert set(by_kind(docs, "PodDisruptionBudget")) == {"wharf-web", "wharf-worker"}
