"""Least privilege (seed 001): only the worker's instance role touches S3, with exactly the
seven listed actions on the stack's one bucket; the web role has no S3 access at all."""

from __future__ import annotations

SEVEN = {
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
}


def _as_list(x):
    return x if isinstance(x, list) else [x]


def resources_of(template, rtype):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def trusted_services(role) -> set[str]:
    out = set()
    for st in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
        out.update(_as_list(st.get("Principal", {}).get("Service", [])))
    return out


def statements(template, role_name):
    """Every policy statement that applies to the role: inline Policies plus any
    AWS::IAM::Policy / ManagedPolicy resource naming it."""
    role = template["Resources"][role_name]
    out = []
    for pol in role["Properties"].get("Policies", []):
        out += pol["PolicyDocument"]["Statement"]
    for rtype in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for res in resources_of(template, rtype).values():
            if {"Ref": role_name} in _as_list(res["Properties"].get("Roles", [])):
                out += res["Properties"]["PolicyDocument"]["Statement"]
    return out


def touches_s3(action: str) -> bool:
    a = action.lower()
    return a == "*" or a.startswith("s3:") or a.startswith("s3*")


def flatten_if(value):
    """Both branches of an Fn::If, so conditional grants are checked too."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, a, b = value["Fn::If"]
        return flatten_if(a) + flatten_if(b)
    return _as_list(value)


def test_instance_roles_are_web_and_worker(template):
    roles = resources_of(template, "AWS::IAM::Role")
    ec2 = {name for name, r in roles.items() if "ec2.amazonaws.com" in trusted_services(r)}
    assert ec2 == {"WebRole", "WorkerRole"}
    profiles = resources_of(template, "AWS::IAM::InstanceProfile")
    assert profiles["WebInstanceProfile"]["Properties"]["Roles"] == [{"Ref": "WebRole"}]
    assert profiles["WorkerInstanceProfile"]["Properties"]["Roles"] == [{"Ref": "WorkerRole"}]
    web_lt = template["Resources"]["WebLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    worker_lt = template["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert web_lt["IamInstanceProfile"]["Arn"] == {"Fn::GetAtt": ["WebInstanceProfile", "Arn"]}
    assert worker_lt["IamInstanceProfile"]["Arn"] == {"Fn::GetAtt": ["WorkerInstanceProfile", "Arn"]}


def test_managed_policies_grant_no_s3(template):
    for name in ("WebRole", "WorkerRole"):
        for arn in template["Resources"][name]["Properties"].get("ManagedPolicyArns", []):
            text = str(arn)
            assert text.endswith("AmazonSSMManagedInstanceCore')") or "AmazonSSMManagedInstanceCore" in text, text
            assert "S3" not in text and "Admin" not in text and "FullAccess" not in text


def test_web_role_has_no_s3(template):
    for st in statements(template, "WebRole"):
        for action in _as_list(st["Action"]):
            assert not touches_s3(action), f"web role grants {action}"
        assert "NotAction" not in st


def test_worker_role_has_exactly_the_seven_actions_on_the_bucket(template):
    buckets = resources_of(template, "AWS::S3::Bucket")
    assert list(buckets) == ["Bucket"], "exactly one bucket in the stack"
    s3_statements = [st for st in statements(template, "WorkerRole")
                     if any(touches_s3(a) for a in _as_list(st["Action"]))]
    assert len(s3_statements) == 1
    st = s3_statements[0]
    assert st["Effect"] == "Allow"
    assert "NotAction" not in st and "NotResource" not in st
    assert set(_as_list(st["Action"])) == SEVEN
    assert len(_as_list(st["Action"])) == 7
    resources = [r["Fn::Sub"] for r in _as_list(st["Resource"])]
    assert sorted(resources) == sorted([
        "arn:${AWS::Partition}:s3:::${Bucket}",
        "arn:${AWS::Partition}:s3:::${Bucket}/*",
    ])
    # No other worker statement mentions S3 in any form.
    for other in statements(template, "WorkerRole"):
        if other is st:
            continue
        for action in _as_list(other["Action"]):
            assert not touches_s3(action)
        for res in flatten_if(other.get("Resource", [])):
            assert ":s3:::" not in str(res)


def test_only_s3_service_roles_besides_worker(template):
    """Any other role with S3 actions (cross-region replication) is assumed by S3 only."""
    for name, role in resources_of(template, "AWS::IAM::Role").items():
        if name in ("WebRole", "WorkerRole"):
            continue
        if any(touches_s3(a) for st in statements(template, name) for a in _as_list(st["Action"])):
            assert trusted_services(role) == {"s3.amazonaws.com"}, name


def test_bucket_is_private_versioned_encrypted(template):
    props = template["Resources"]["Bucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert props["LifecycleConfiguration"]["Rules"]


def test_redis_is_encrypted(template):
    # Multi-AZ and failover depend on the replica count: tests/deploy/test_redis.py.
    props = template["Resources"]["Redis"]["Properties"]
    assert props["TransitEncryptionEnabled"] is True
    assert props["AtRestEncryptionEnabled"] is True
    assert "resolve:secretsmanager" in props["AuthToken"]["Fn::Sub"]


def test_redis_reachable_only_from_web_and_worker(template):
    ingress = template["Resources"]["RedisSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    sources = {r["SourceSecurityGroupId"]["Ref"] for r in ingress}
    assert sources == {"WebSecurityGroup", "WorkerSecurityGroup"}
    assert all("CidrIp" not in r for r in ingress)


def test_instances_reachable_only_from_lb(template):
    web = template["Resources"]["WebSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert {r["SourceSecurityGroupId"]["Ref"] for r in web} == {"LoadBalancerSecurityGroup"}
    assert {(r["FromPort"], r["ToPort"]) for r in web} == {(80, 80), (443, 443)}
    assert "SecurityGroupIngress" not in template["Resources"]["WorkerSecurityGroup"]["Properties"]
    for res in resources_of(template, "AWS::EC2::SecurityGroupIngress").values():
        assert res["Properties"]["GroupId"]["Ref"] not in ("WebSecurityGroup", "WorkerSecurityGroup")
