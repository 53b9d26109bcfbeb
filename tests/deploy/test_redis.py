"""Redis data safety in the deploy kit (docs/operations.md, "Redis settings and data safety").

The CloudFormation template is evaluated for every combination of the Redis parameters (cluster
mode on/off, 0-5 replicas, prod or not) the way CloudFormation would: Rules first (a refused
combination never becomes a stack), then Conditions, Fn::If, Fn::FindInMap and the user data's
Fn::Sub variables. For every accepted combination:

- Redis uses one of the stack's parameter groups, all of which set maxmemory-policy noeviction
  (and cluster-enabled yes in cluster mode);
- a replica means automatic failover, Multi-AZ and REDIS_MIN_REPLICAS_ACK=1 on both roles;
  no replica means REDIS_MIN_REPLICAS_ACK=0 (WAIT for a replica that does not exist would turn
  every submission into a 503);
- REDIS_CLUSTER and REDIS_HOST/REDIS_PORT follow the mode (configuration endpoint in cluster mode).
"""

from __future__ import annotations

import itertools
import re

import pytest

from conftest import load_rendered

NOVALUE = object()


class Stack:
    """The template evaluated for one set of parameter values."""

    def __init__(self, template: dict, **params: str):
        self.t = template
        self.params = {name: str(p["Default"]) for name, p in template["Parameters"].items() if "Default" in p}
        self.params.update({k: str(v) for k, v in params.items()})

    def cond(self, name: str) -> bool:
        return self.truth(self.t["Conditions"][name])

    def truth(self, expr) -> bool:
        ((fn, arg),) = expr.items()
        if fn in ("Condition", "Fn::Condition"):  # long form / conftest's reading of !Condition
            return self.cond(arg)
        if fn == "Fn::Equals":
            a, b = (self.value(x) for x in arg)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        if fn == "Fn::Or":
            return any(self.truth(x) for x in arg)
        if fn == "Fn::And":
            return all(self.truth(x) for x in arg)
        raise AssertionError(f"condition function not handled by this test: {fn}")

    def value(self, v):
        if isinstance(v, list):
            return [x for x in (self.value(i) for i in v) if x is not NOVALUE]
        if isinstance(v, dict):
            if len(v) == 1:
                ((fn, arg),) = v.items()
                if fn == "Ref":
                    if arg == "AWS::NoValue":
                        return NOVALUE
                    return self.params.get(arg, v)  # a resource or pseudo parameter stays symbolic
                if fn == "Fn::If":
                    name, yes, no = arg
                    return self.value(yes if self.cond(name) else no)
                if fn == "Fn::FindInMap":
                    mapping, key1, key2 = (self.value(x) for x in arg)
                    return self.t["Mappings"][mapping][str(key1)][key2]
            out = {k: self.value(x) for k, x in v.items()}
            return {k: x for k, x in out.items() if x is not NOVALUE}
        return v

    def accepted(self) -> bool:
        """Whether CloudFormation accepts these parameters (every applicable Rule assertion holds)."""
        for rule in self.t.get("Rules", {}).values():
            if "RuleCondition" in rule and not self.truth(rule["RuleCondition"]):
                continue
            if not all(self.truth(a["Assert"]) for a in rule["Assertions"]):
                return False
        return True

    def exists(self, resource: str) -> bool:
        cond = self.t["Resources"][resource].get("Condition")
        return cond is None or self.cond(cond)

    def properties(self, resource: str) -> dict:
        assert self.exists(resource), f"{resource} is not created with {self.params}"
        return self.value(self.t["Resources"][resource]["Properties"])

    def role_env(self, role: str) -> dict[str, str]:
        """/etc/wharf/<role>.env as the instance writes it, ${...} resolved where the stack knows
        the value (parameters, the Fn::Sub variable map); GetAtt values as 'GetAtt:Res.Attr'."""
        lt = "WebLaunchTemplate" if role == "web" else "WorkerLaunchTemplate"
        body, variables = self.t["Resources"][lt]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
        variables = self.value(variables)
        heredoc = re.search(rf"cat > /etc/wharf/{role}\.env <<'EOF'\n(.*?)\nEOF\n", body, re.S).group(1)

        def sub(m: re.Match) -> str:
            name = m.group(1)
            val = variables.get(name, self.params.get(name))
            if isinstance(val, dict) and "Fn::GetAtt" in val:
                res, attr = val["Fn::GetAtt"]
                return f"GetAtt:{res}.{attr}"
            return m.group(0) if val is None else str(val)

        env = {}
        for line in re.sub(r"\$\{([A-Za-z0-9:.]+)\}", sub, heredoc).splitlines():
            if "=" in line and not line.startswith("#"):
                name, value = line.split("=", 1)
                env[name] = value
        return env


def scenarios(template):
    """Every combination of the Redis parameters, accepted by the Rules or not."""
    levels = ["prod", "dev"]
    modes = template["Parameters"]["RedisClusterMode"]["AllowedValues"]
    replicas = template["Parameters"]["RedisReplicasPerNodeGroup"]["AllowedValues"]
    for level, mode, n in itertools.product(levels, modes, replicas):
        yield Stack(template, DeployLevel=level, RedisClusterMode=mode, RedisReplicasPerNodeGroup=n)


def accepted(template):
    out = [s for s in scenarios(template) if s.accepted()]
    assert out, "the Rules refuse every combination"
    return out


def test_every_redis_parameter_group_sets_noeviction(template):
    groups = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::ElastiCache::ParameterGroup"}
    assert groups, "no cache parameter group in the stack (ElastiCache's default one evicts: volatile-lru)"
    versions = template["Parameters"]["RedisEngineVersion"]["AllowedValues"]
    for name, group in groups.items():
        props = group["Properties"]
        assert props["Properties"]["maxmemory-policy"] == "noeviction", name
        # The family must fit every engine version the stack accepts.
        assert {f"redis{v.split('.')[0]}" for v in versions} == {props["CacheParameterGroupFamily"]}, name
    for stack in accepted(template):
        cluster = stack.params["RedisClusterMode"] == "true"
        pg = stack.properties("Redis")["CacheParameterGroupName"]
        assert isinstance(pg, dict) and pg.get("Ref") in groups, f"Redis uses {pg}, not the stack's noeviction group"
        assert stack.exists(pg["Ref"])
        params = stack.properties(pg["Ref"])["Properties"]
        assert params["maxmemory-policy"] == "noeviction"
        assert (params.get("cluster-enabled") == "yes") == cluster, (stack.params, params)


def test_replicas_mean_failover_multi_az_and_replica_acknowledgement(template):
    seen = set()
    for stack in accepted(template):
        cluster = stack.params["RedisClusterMode"] == "true"
        replicas = int(stack.params["RedisReplicasPerNodeGroup"])
        seen.add((cluster, replicas > 0))
        redis = stack.properties("Redis")
        where = f"{stack.params['DeployLevel']}, cluster={cluster}, replicas={replicas}"
        if cluster:
            assert redis["NumNodeGroups"] == stack.params["RedisNumNodeGroups"], where
            assert str(redis["ReplicasPerNodeGroup"]) == str(replicas), where
            assert "NumCacheClusters" not in redis, where
            assert redis["AutomaticFailoverEnabled"] is True, where
        else:
            assert int(redis["NumCacheClusters"]) == replicas + 1, where
            assert "NumNodeGroups" not in redis and "ReplicasPerNodeGroup" not in redis, where
        if replicas:
            assert redis["AutomaticFailoverEnabled"] is True, where
            assert redis["MultiAZEnabled"] is True, where
        else:
            assert redis["MultiAZEnabled"] is False, where
        endpoint = "ConfigurationEndPoint" if cluster else "PrimaryEndPoint"
        for role in ("web", "worker"):
            env = stack.role_env(role)
            assert env["REDIS_MIN_REPLICAS_ACK"] == ("1" if replicas else "0"), (where, role)
            assert env["REDIS_CLUSTER"] == ("true" if cluster else "false"), (where, role)
            assert env["REDIS_HOST"] == f"GetAtt:Redis.{endpoint}.Address", (where, role)
            assert env["REDIS_PORT"] == f"GetAtt:Redis.{endpoint}.Port", (where, role)
            assert env["REDIS_ALLOW_EVICTION_DATA_LOSS"] == "false", (where, role)
            if cluster:
                assert env["REDIS_DB"] == "0", "a Redis Cluster has only database 0"
    # Both modes, with and without replicas, were looked at (standalone without replicas: dev only).
    assert seen == {(True, True), (False, True), (False, False)}, seen


def test_rules_refuse_redis_without_replicas_in_cluster_mode_and_in_prod(template):
    def stack(level, mode, n):
        return Stack(template, DeployLevel=level, RedisClusterMode=mode, RedisReplicasPerNodeGroup=n)
    assert not stack("prod", "false", "0").accepted()
    assert not stack("dev", "true", "0").accepted()
    assert stack("dev", "false", "0").accepted()
    assert stack("prod", "true", "1").accepted()
    assert stack("prod", "false", "1").accepted()
    # The defaults: one replica, so prod gets failover and REDIS_MIN_REPLICAS_ACK=1 out of the box.
    assert template["Parameters"]["RedisReplicasPerNodeGroup"]["Default"] == "1"


def test_memory_alarm_fires_before_web_refuses_submissions(template):
    high_water = int(Stack(template).role_env("web")["REDIS_MEMORY_HIGH_WATER_PERCENT"])
    assert 10 <= high_water <= 95
    assert "REDIS_MEMORY_HIGH_WATER_PERCENT" not in Stack(template).role_env("worker")
    alarm = template["Resources"]["RedisMemoryAlarm"]["Properties"]
    assert alarm["Threshold"] < high_water
    # The alarm's metric is the one the workers' queue-metrics timer publishes (both modes).
    worker_body = template["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"][0]
    assert alarm["Namespace"] == "Wharf"
    assert f"--metric-name {alarm['MetricName']} " in worker_body


# ---- how the queue shards spread over the masters of a Redis Cluster

def crc16(data: bytes) -> int:
    """CRC16-XMODEM, the hash of Redis Cluster key slots (slot = crc16(hash tag) % 16384)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def streams_per_master(shards: int, masters: int) -> list[int]:
    """Queue streams per master when the 16384 slots are split into equal contiguous ranges (what
    ElastiCache and `redis-cli --cluster create` do unless told otherwise)."""
    counts = [0] * masters
    for n in range(shards):
        slot = crc16(str(n).encode()) % 16384  # the hash tag of wharf:{n}:submissions is "n"
        counts[min(slot * masters // 16384, masters - 1)] += 1
    return counts


def test_slot_hash_matches_redis():
    assert crc16(b"123456789") == 0x31C3  # the test vector of the Redis Cluster specification
    # CLUSTER KEYSLOT wharf:{0}:submissions and wharf:{3}:submissions on Redis 7.0.
    assert crc16(b"0") % 16384 == 13907 and crc16(b"3") % 16384 == 1584


def test_default_queue_shards_spread_evenly_over_the_cluster_masters(template):
    shards = int(template["Parameters"]["QueueShards"]["Default"])
    masters = int(template["Parameters"]["RedisNumNodeGroups"]["Default"])
    counts = streams_per_master(shards, masters)
    assert len(set(counts)) == 1, f"QueueShards {shards} over {masters} masters: {counts} streams per master"


@pytest.mark.parametrize("masters", [2, 4])
def test_cluster_overlay_shards_spread_evenly_over_two_or_four_masters(masters):
    """components/redis-cluster documents 2 or 4 masters for its QUEUE_SHARDS."""
    docs = load_rendered("prod-cluster")
    common = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("wharf-common"))
    counts = streams_per_master(int(common["data"]["QUEUE_SHARDS"]), masters)
    assert len(set(counts)) == 1 and counts[0] >= 2, counts
