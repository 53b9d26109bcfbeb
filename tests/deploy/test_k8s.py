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
    assert set(by_kind(docs, "PodDisruptionBudget")) == {"wharf-web", "wharf-worker"}


def test_worker_scales_on_the_lag_of_every_shard_stream(rendered):
    """One KEDA trigger per shard stream wharf:{n}:submissions (n < QUEUE_SHARDS), on the consumer
    group's lag, each with the fleet-wide target divided by the shard count (the HPA takes the
    max over triggers, not the sum). The scaler matches the Redis: redis-streams for one Redis,
    redis-cluster-streams where REDIS_CLUSTER=true (a plain client would get MOVED replies)."""
    env, docs = rendered
    so = by_kind(docs, "ScaledObject")["wharf-worker"]
    assert not [t for t in so["spec"]["triggers"] if t["type"] == "redis"], "the lists scaler is gone"
    deps = by_kind(docs, "Deployment")
    shards = {int(configmap_value(docs, deps[d], "QUEUE_SHARDS")) for d in ("wharf-web", "wharf-worker")}
    assert len(shards) == 1, f"QUEUE_SHARDS differs between web and worker: {shards}"
    (n,) = shards
    clustered = {configmap_value(docs, deps[d], "REDIS_CLUSTER") for d in ("wharf-web", "wharf-worker")}
    assert len(clustered) == 1, f"REDIS_CLUSTER differs between web and worker: {clustered}"
    cluster = clustered.pop() == "true"
    scaler, other = ("redis-cluster-streams", "redis-streams") if cluster else ("redis-streams", "redis-cluster-streams")
    assert not [t for t in so["spec"]["triggers"] if t["type"] == other], f"{env}: {other} triggers on this Redis"
    streams = [t for t in so["spec"]["triggers"] if t["type"] == scaler]
    assert sorted(t["metadata"]["stream"] for t in streams) == sorted(f"wharf:{{{i}}}:submissions" for i in range(n)), env
    targets = set()
    for t in streams:
        meta = t["metadata"]
        assert meta["consumerGroup"] == "wharf-workers"
        assert "lagCount" in meta and "pendingEntriesCount" not in meta and "streamLength" not in meta
        if cluster:
            assert meta["hostsFromEnv"] == "REDIS_HOST" and meta["portsFromEnv"] == "REDIS_PORT"
            assert "databaseIndex" not in meta, "a Redis Cluster has only database 0"
        else:
            assert meta["hostFromEnv"] == "REDIS_HOST" and meta["portFromEnv"] == "REDIS_PORT"
        assert meta["enableTLS"] == "true"
        assert t["authenticationRef"]["name"] == "wharf-redis"
        targets.add(int(meta["lagCount"]))
    assert len(targets) == 1 and targets.pop() * n == 5000
    assert [t for t in so["spec"]["triggers"] if t["type"] == "cpu"]


def test_a_cluster_overlay_exists_and_asks_a_replica_to_confirm(rendered):
    """overlays/prod-cluster is the Redis Cluster variant: cluster client and cluster scaler (above),
    and REDIS_MIN_REPLICAS_ACK=1 (a production cluster has a replica per shard). Prod asks a replica
    too; no overlay lets Redis evict queued documents."""
    env, docs = rendered
    deps = by_kind(docs, "Deployment")
    for d in ("wharf-web", "wharf-worker"):
        assert configmap_value(docs, deps[d], "REDIS_ALLOW_EVICTION_DATA_LOSS") == "false", (env, d)
        cluster = configmap_value(docs, deps[d], "REDIS_CLUSTER")
        assert cluster == ("true" if env.endswith("-cluster") else "false"), (env, d)
        ack = configmap_value(docs, deps[d], "REDIS_MIN_REPLICAS_ACK")
        if env.startswith("prod"):
            assert ack == "1", (env, d)
    high_water = int(configmap_value(docs, deps["wharf-web"], "REDIS_MEMORY_HIGH_WATER_PERCENT"))
    assert 10 <= high_water <= 95


def test_every_overlay_is_rendered():
    from conftest import RENDERED, RENDERED_ENVS
    overlays = sorted(p.name for p in (RENDERED.parent / "overlays").iterdir() if p.is_dir())
    assert overlays == RENDERED_ENVS
    assert "prod-cluster" in overlays


def test_removed_settings_are_gone(rendered):
    _, docs = rendered
    for cm in by_kind(docs, "ConfigMap").values():
        for name in ("WORKER_HEARTBEAT_MS", "WORKER_MISSED_HEARTBEATS"):
            assert name not in cm.get("data", {}), (cm["metadata"]["name"], name)
