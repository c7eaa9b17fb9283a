"""The backup resources of both stacks under mocks: the bucket's controls, IRSA, the CronJob."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.settings import SettingsError, settings_from_config
from smoke.local.render import Rendered, manifest
from tests.support import render_with

ACCOUNT = {"dev": "111111111111", "prod": "222222222222"}
RETENTION = {"dev": 7, "prod": 30}


@pytest.fixture(params=["dev", "prod"])
def stack(request: pytest.FixtureRequest) -> Rendered:
    return request.getfixturevalue(request.param)


def aws(stack: Rendered, type_suffix: str) -> list[dict[str, Any]]:
    found = [manifest(r) for r in stack.resources if r.custom and r.type.endswith(type_suffix)]
    assert found, f"no {type_suffix} in the {stack.stack} stack"
    return found


def one(stack: Rendered, type_suffix: str) -> dict[str, Any]:
    (found,) = aws(stack, type_suffix)
    return found


def bucket_name(stack: Rendered) -> str:
    return one(stack, ":s3/bucket:Bucket")["bucket"]


def test_the_bucket_is_named_from_settings_and_every_control_targets_it(stack: Rendered) -> None:
    assert bucket_name(stack) == f"lbpay-dict-redis-backups-{stack.stack}"
    bucket_id = next(r.name for r in stack.resources if r.type == "aws:s3/bucket:Bucket") + "-id"
    for control in (
        "BucketVersioning",
        "BucketServerSideEncryptionConfiguration",
        "BucketPublicAccessBlock",
        "BucketOwnershipControls",
        "BucketLifecycleConfiguration",
        "BucketPolicy",
    ):
        assert one(stack, f":{control}")["bucket"] == bucket_id, control
    # pulumi-aws 7 names only: none of the deprecated *V2 classes.
    assert not [r.type for r in stack.resources if r.type.startswith("aws:") and r.type.endswith("V2")]


def test_objects_are_encrypted_with_a_dedicated_rotating_kms_key(stack: Rendered) -> None:
    key = one(stack, ":kms/key:Key")
    assert key["enableKeyRotation"] is True and key["deletionWindowInDays"] >= 7
    (rule,) = one(stack, ":BucketServerSideEncryptionConfiguration")["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "arn:aws:mock:::backup-bucket-key"}
    assert rule["bucketKeyEnabled"] is True


def test_versioning_public_access_and_ownership(stack: Rendered) -> None:
    assert one(stack, ":BucketVersioning")["versioningConfiguration"] == {"status": "Enabled"}
    block = one(stack, ":BucketPublicAccessBlock")
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert {f: block[f] for f in flags} == dict.fromkeys(flags, True)
    assert one(stack, ":BucketOwnershipControls")["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_lifecycle_keeps_backups_no_longer_than_the_retention_plus_a_day(stack: Rendered) -> None:
    (rule,) = one(stack, ":BucketLifecycleConfiguration")["rules"]
    days = RETENTION[stack.stack]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == {"prefix": f"redis/{stack.stack}/"}
    assert rule["expiration"] == {"days": days}
    # Expiry leaves a noncurrent version on a versioned bucket: gone one day later, not N.
    assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": 1}


def test_the_bucket_policy_denies_every_request_without_tls(stack: Rendered) -> None:
    policy = json.loads(one(stack, ":BucketPolicy")["policy"])
    (statement,) = policy["Statement"]
    arn = f"arn:aws:s3:::{bucket_name(stack)}"
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert sorted(statement["Resource"]) == [arn, f"{arn}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_every_aws_resource_is_tagged_and_uses_the_explicit_regional_provider(stack: Rendered) -> None:
    provider = one(stack, "pulumi:providers:aws")
    assert provider["region"] == "sa-east-1"
    for resource in stack.resources:
        if resource.custom and resource.type.startswith("aws:") and "tags" in manifest(resource):
            assert manifest(resource)["tags"]["dict.lbpay.com.br/stack"] == stack.stack
    tagged = {r.type.split(":")[-1] for r in stack.resources if r.type.startswith("aws:") and "tags" in r.inputs}
    assert {"Key", "Bucket", "Role"} <= tagged


def test_the_role_trusts_only_the_backup_service_account_through_the_oidc_provider(stack: Rendered) -> None:
    trust = json.loads(one(stack, ":iam/role:Role")["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    issuer = f"oidc.eks.sa-east-1.amazonaws.com/id/{stack.stack.upper()}0EXAMPLE"
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT[stack.stack]}:oidc-provider/{issuer}"}
    namespace = stack.kubernetes("Namespace")[0]["metadata"]["name"]
    assert statement["Condition"] == {
        "StringEquals": {
            f"{issuer}:sub": f"system:serviceaccount:{namespace}:redis-backup",
            f"{issuer}:aud": "sts.amazonaws.com",
        }
    }
    account = stack.find("ServiceAccount", "redis-backup")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:mock:::backup-role"}


def test_the_role_may_only_put_under_the_tiers_prefixes_get_list_the_prefix_and_use_that_key(stack: Rendered) -> None:
    policy = json.loads(one(stack, ":iam/rolePolicy:RolePolicy")["policy"])
    arn, prefix = f"arn:aws:s3:::{bucket_name(stack)}", f"redis/{stack.stack}"
    grants = {s["Sid"]: s for s in policy["Statement"]}
    assert set(grants) == {"WriteBackups", "ReadBackups", "ListBackups", "UseBackupKey"}
    assert all(s["Effect"] == "Allow" for s in grants.values())
    # Writes only where the job writes: one prefix per data tier.
    assert grants["WriteBackups"]["Action"] == "s3:PutObject"
    assert grants["WriteBackups"]["Resource"] == [f"{arn}/{prefix}/cache/*", f"{arn}/{prefix}/state/*"]
    # Reads under the whole prefix: the cache's backups from before the tier split sit directly under it.
    assert grants["ReadBackups"]["Action"] == "s3:GetObject"
    assert grants["ReadBackups"]["Resource"] == f"{arn}/{prefix}/*"
    assert grants["ListBackups"]["Action"] == "s3:ListBucket" and grants["ListBackups"]["Resource"] == arn
    assert grants["ListBackups"]["Condition"] == {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}}
    assert grants["UseBackupKey"]["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"]
    assert grants["UseBackupKey"]["Resource"] == "arn:aws:mock:::backup-bucket-key"
    actions = [a for s in grants.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not [a for a in actions if "*" in a or "Delete" in a]


def test_no_aws_access_key_appears_anywhere_in_the_stack(stack: Rendered) -> None:
    text = json.dumps([r.inputs for r in stack.resources]) + json.dumps(stack.outputs)
    for marker in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "aws_access_key", "accessKey", "AKIA"):
        assert marker not in text
    assert not [r.type for r in stack.resources if r.type.startswith("aws:iam/accessKey")]


def test_the_cronjob_runs_every_six_hours_without_overlap_with_deadlines_and_limits(stack: Rendered) -> None:
    cron = stack.find("CronJob", "redis-backup")["spec"]
    assert cron["schedule"] == "0 */6 * * *"
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["startingDeadlineSeconds"] == 600
    assert cron["successfulJobsHistoryLimit"] == 3 and cron["failedJobsHistoryLimit"] == 3
    job = cron["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2
    assert 60 <= job["activeDeadlineSeconds"] <= 6 * 3600


def test_the_backup_pod_dumps_in_the_redis_image_and_uploads_in_the_pinned_aws_cli_image(stack: Rendered) -> None:
    pod = stack.find("CronJob", "redis-backup")["spec"]["jobTemplate"]["spec"]["template"]
    spec = pod["spec"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dict-redis"  # admitted to Redis
    assert spec["serviceAccountName"] == "redis-backup" and spec["restartPolicy"] == "Never"
    # Both tiers in one run, state first: a run succeeds only once both are stored.
    steps = [*spec["initContainers"], *spec["containers"]]
    assert [c["name"] for c in steps] == ["dump-state", "upload-state", "dump-cache", "upload-cache"]
    assert [c["name"] for c in spec["containers"]] == ["upload-cache"]
    redis_image = stack.find("StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]["image"]
    dumps = [c for c in steps if c["name"].startswith("dump-")]
    uploads = [c for c in steps if c["name"].startswith("upload-")]
    for dump in dumps:
        assert dump["image"] == redis_image
        assert dump["command"] == ["sh", "/etc/redis-backup/backup.sh", "dump"]
        assert "/etc/redis-auth" in {m["mountPath"] for m in dump["volumeMounts"]}
    for upload in uploads:
        assert upload["image"] == "amazon/aws-cli:2.15.30"
        assert upload["command"] == ["sh", "/etc/redis-backup/backup.sh", "upload"]
        assert "/etc/redis-auth" not in {m["mountPath"] for m in upload["volumeMounts"]}
        assert {e["name"]: e["value"] for e in upload["env"]} == {"BACKUP_TIER": upload["name"][7:], "HOME": "/tmp"}
    for container in steps:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
        assert set(container["resources"]) == {"requests", "limits"}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/backup", "/tmp", "/etc/redis-backup"} <= mounts
        # The password only as the mounted Secret file; nothing AWS in the environment.
        assert all("valueFrom" not in e and not e["name"].startswith("AWS_") for e in container.get("env", []))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["scratch"]["emptyDir"]["sizeLimit"] == ("1Gi" if stack.stack == "dev" else "8Gi")
    assert volumes["scripts"]["configMap"]["name"] == "redis-backup-scripts"


def containers(stack: Rendered) -> dict[str, dict[str, Any]]:
    spec = stack.find("CronJob", "redis-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}


def test_each_dump_backs_up_its_own_tier_found_by_its_master_name(stack: Rendered) -> None:
    """The state tier's dump is wired to the state tier: its Sentinel master name and its pods,
    the tier the upload puts it under; the cache's keeps the rendered (cache) defaults."""
    namespace = stack.kubernetes("Namespace")[0]["metadata"]["name"]
    expected = {
        "state": ("dictstate", "redis-state", "redis-state-headless"),
        "cache": ("mymaster", "redis", "redis-headless"),
    }
    for tier, (master, statefulset, headless) in expected.items():
        env = {e["name"]: e["value"] for e in containers(stack)[f"dump-{tier}"]["env"]}
        pods = [f"{statefulset}-{i}.{headless}.{namespace}.svc.cluster.local" for i in range(3)]
        assert env["BACKUP_TIER"] == tier and env["MASTER_NAME"] == master, tier
        assert env["REDIS_ADDRS"] == " ".join(f"{pod}:6379" for pod in pods), tier
        assert env["REDIS_SEED_HOST"] == pods[0], tier
        assert stack.find("StatefulSet", statefulset)["spec"]["replicas"] == 3
    scripts = stack.find("ConfigMap", "redis-backup-scripts")["data"]
    assert ': "${MASTER_NAME:=mymaster}"' in scripts["common.sh"]  # the rendered default: the cache
    assert ': "${BACKUP_TIER:=cache}"' in scripts["backup.sh"]
    # backup.sh checks MASTER_NAME against the tier's entry of the Sentinels' monitors.
    monitors = next(line for line in scripts["common.sh"].splitlines() if line.startswith(': "${SENTINEL_MONITORS:='))
    assert [m.split("=")[0] for m in monitors.split(":=")[1].rstrip('}"').split()] == ["mymaster", "dictstate"]


def test_the_dump_gets_only_its_two_secret_keys_and_with_tls_only_the_ca(stack: Rendered) -> None:
    spec = stack.find("CronJob", "redis-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    steps = containers(stack)
    dump, upload = steps["dump-cache"], steps["upload-cache"]
    assert steps["dump-state"]["volumeMounts"] == dump["volumeMounts"]
    assert steps["upload-state"]["volumeMounts"] == upload["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    # Not the whole Secret: the backup user's password and the Sentinels', nothing else.
    assert volumes["auth"]["secret"]["items"] == [
        {"key": "backup-password", "path": "backup-password"},
        {"key": "sentinel-requirepass", "path": "sentinel-requirepass"},
    ]
    tls = stack.stack == "prod"  # Pulumi.prod.yaml turns TLS on, dev leaves it off
    for step in ("dump-state", "dump-cache"):
        env = {e["name"]: e["value"] for e in steps[step]["env"]}
        assert {k: env[k] for k in ("REDIS_USER", "REDIS_TLS")} == {
            "REDIS_USER": "backup",
            "REDIS_TLS": "yes" if tls else "no",
        }
        assert set(env) == {"BACKUP_TIER", "MASTER_NAME", "REDIS_ADDRS", "REDIS_SEED_HOST", "REDIS_USER", "REDIS_TLS"}
    dump_mounts = {m["name"]: m for m in dump["volumeMounts"]}
    assert dump_mounts["auth"]["readOnly"] is True
    if tls:
        certificate = stack.find("Certificate", "redis-tls")["spec"]["secretName"]
        assert volumes["tls"]["secret"] == {
            "secretName": certificate,
            "defaultMode": 0o440,
            "items": [{"key": "ca.crt", "path": "ca.crt"}],  # no tls.key: the dump is only a client
        }
        assert dump_mounts["tls"] == {"name": "tls", "mountPath": "/etc/redis-tls", "readOnly": True}
    else:
        assert "tls" not in volumes and "tls" not in dump_mounts
    assert not {"auth", "tls"} & {m["name"] for m in upload["volumeMounts"]}
    # The rendered scripts default to the same user and TLS switch as the pod's env says.
    scripts = stack.find("ConfigMap", "redis-backup-scripts")["data"]
    assert ': "${REDIS_USER:=backup}"' in scripts["backup.sh"]
    assert f': "${{REDIS_TLS:={env["REDIS_TLS"]}}}"' in scripts["common.sh"]


def test_the_backup_scripts_configmap_carries_the_stack_defaults(stack: Rendered) -> None:
    data = stack.find("ConfigMap", "redis-backup-scripts")["data"]
    assert set(data) == {"common.sh", "backup-common.sh", "backup.sh", "restore.sh"}
    assert f"BACKUP_BUCKET:=lbpay-dict-redis-backups-{stack.stack}" in data["backup-common.sh"]
    assert f"BACKUP_PREFIX:=redis/{stack.stack}" in data["backup-common.sh"]
    assert 'BACKUP_TIERS="cache state"' in data["backup-common.sh"]  # objects under <prefix>/<tier>/
    assert "@@" not in "".join(data.values())


def test_the_backup_pod_may_reach_https_and_the_layer_but_nothing_else_is_opened(stack: Rendered) -> None:
    egress = stack.find("NetworkPolicy", "redis-backup")["spec"]
    assert egress["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "backup"
    assert egress["policyTypes"] == ["Egress"]
    assert egress["egress"] == [{"ports": [{"protocol": "TCP", "port": 443}]}]


def test_backup_outputs(stack: Rendered) -> None:
    assert stack.outputs["backupBucket"] == bucket_name(stack)
    assert stack.outputs["backupCronJob"] == "redis-backup"
    assert stack.outputs["backupRoleArn"] == "arn:aws:mock:::backup-role"


def test_a_stack_without_backups_registers_no_aws_resource() -> None:
    rendered = render_with("dev", {"dict-redis:backup": '{"enabled": false}'})
    assert not [r for r in rendered.resources if r.type.startswith(("aws:", "pulumi:providers:aws"))]
    assert rendered.kubernetes("CronJob") == [] and "backupBucket" not in rendered.outputs


@pytest.mark.parametrize(
    ("backup", "expected"),
    [
        (
            {"enabled": True, "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/x"},
            "backup.bucketName: required",
        ),
        ({"enabled": True, "bucketName": "b-ok"}, "backup.oidcProviderArn: required"),
        ({"bucketName": "Bad_Bucket"}, "backup.bucketName = 'Bad_Bucket'"),
        ({"oidcProviderArn": "arn:aws:iam::12:role/x"}, "backup.oidcProviderArn = 'arn:aws:iam::12:role/x'"),
        ({"retentionDays": 0}, "backup.retentionDays = 0"),
        (
            {
                "enabled": True,
                "bucketName": "b-ok",
                "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/x",
                "schedule": "every 6 hours",
            },
            "backup.schedule = 'every 6 hours': a five-field cron",
        ),
        (
            {
                "enabled": True,
                "bucketName": "b-ok",
                "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/x",
                "awsCliImage": "amazon/aws-cli:latest",
            },
            "backup.awsCliImage = 'amazon/aws-cli:latest': pin the image",
        ),
        (
            {
                "enabled": True,
                "bucketName": "b-ok",
                "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/x",
                "scratchSize": "1Mi",
            },
            "backup.scratchSize = '1Mi': must hold one dump",
        ),
        ({"activeDeadlineSeconds": 30000}, "backup.activeDeadlineSeconds = 30000"),
        ({"bucket": "x"}, "backup.bucket: unknown key; valid keys here: activeDeadlineSeconds, awsCliImage"),
    ],
)
def test_bad_backup_settings_name_the_key_value_and_what_is_valid(backup: dict[str, Any], expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_config({"dict-redis:backup": json.dumps(backup)}, "test")
    assert expected in str(caught.value)
