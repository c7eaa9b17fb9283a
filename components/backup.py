"""Backups: the S3 bucket and its KMS key, and the CronJob that fills it through IRSA.

``BackupBucket`` is the AWS side: a dedicated KMS key (rotation on), the bucket with SSE-KMS
(bucket key), versioning, all four public-access blocks, ``BucketOwnerEnforced``, a policy that
denies any request not made over TLS, and lifecycle rules that expire backups and their
noncurrent versions after ``backup.retentionDays``.

``BackupJob`` is the cluster side: a ServiceAccount annotated with an IAM role that only that
service account (by namespace and name, through the cluster's OIDC provider) can assume, and that
may only put under the tiers' prefixes, get/list under the backup prefix and use that KMS key;
and the ``redis-backup`` CronJob running the rendered ``backup.sh`` once per data tier, state
first (it holds the decisions a full-loss restore brings back first), then the cache: for each,
``dump-<tier>`` in the server image (its cli and check-rdb: valkey-* or redis-*), then
``upload-<tier>`` in the AWS CLI image, sharing one scratch volume. One CronJob, so one success
signal (``RedisBackupMissing``) means both tiers are stored. No AWS access key exists anywhere:
the CLI gets web-identity credentials from the token EKS mounts. The dump connects as the ACL
user ``backup`` and sees only the two Secret keys it needs (that user's password and the
Sentinels'), plus the CA when TLS is on; the uploads see no Redis secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import acl, pods
from components import topology as t
from components.renderers.scripts import BACKUP_SCRIPTS, render_scripts
from components.settings import Settings

COMPONENT = "backup"
HISTORY_LIMIT = 3
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
KMS_DELETION_WINDOW_DAYS = 30


def bucket_arn(settings: Settings) -> str:
    """Known from the settings alone (no wait for the bucket), so policies render at preview."""
    return f"arn:aws:s3:::{settings.backup.bucket_name}"


def aws_tags(settings: Settings) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "dict-redis",
        "app.kubernetes.io/managed-by": "pulumi",
        "dict.lbpay.com.br/stack": settings.stack,
        "dict.lbpay.com.br/purpose": "redis-backup",
    }


def tls_only_policy(arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def trust_policy(settings: Settings) -> dict[str, Any]:
    """Web identity from the cluster's OIDC provider, for exactly the backup service account."""
    b = settings.backup
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": b.oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{b.oidc_issuer}:sub": f"system:serviceaccount:{settings.namespace}:{b.service_account}",
                        f"{b.oidc_issuer}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


# The order the CronJob's pod backs the tiers up in: the state tier first (the decisions; what a
# full-loss restore brings back first), so its backup never waits on the cache's.
BACKUP_ORDER: tuple[t.TierName, ...] = ("state", "cache")


def tier_prefix(settings: Settings, tier: t.TierName) -> str:
    """Where one tier's backups go: ``<prefix>/<tier>/YYYY/MM/DD/<time>-<source>.rdb``."""
    return f"{settings.backup.prefix}/{tier}"


def access_policy(settings: Settings, kms_key_arn: str) -> dict[str, Any]:
    """Put only under the tiers' prefixes (what the job writes), get and list under the backup
    prefix (the cache's backups from before the tier split sit directly under it until they
    expire), and that one key; nothing else (no delete: old backups go by the lifecycle rules,
    not by the job)."""
    arn, prefix = bucket_arn(settings), settings.backup.prefix
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteBackups",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": [f"{arn}/{tier_prefix(settings, tier)}/*" for tier in t.TIERS],
            },
            {
                "Sid": "ReadBackups",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"{arn}/{prefix}/*",
            },
            {
                "Sid": "ListBackups",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}},
            },
            {
                "Sid": "UseBackupKey",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": kms_key_arn,
            },
        ],
    }


# Days a noncurrent (expired or deleted) backup version is kept before S3 removes it.
NONCURRENT_DAYS = 1


@dataclass(frozen=True)
class BackupBucketArgs:
    settings: Settings


class BackupBucket(pulumi.ComponentResource):
    """The KMS key and the hardened, versioned, expiring bucket the backups go to."""

    bucket_name: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]

    def __init__(self, name: str, args: BackupBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:BackupBucket", name, None, opts)
        s, b = args.settings, args.settings.backup
        child = pulumi.ResourceOptions(parent=self)
        tags = aws_tags(s)
        key = aws.kms.Key(
            f"{name}-key",
            description=f"dict-redis {s.stack}: Redis backups in s3://{b.bucket_name}",
            enable_key_rotation=True,
            deletion_window_in_days=KMS_DELETION_WINDOW_DAYS,
            tags=tags,
            opts=child,
        )
        bucket = aws.s3.Bucket(f"{name}-bucket", bucket=b.bucket_name, force_destroy=False, tags=tags, opts=child)
        on_bucket = pulumi.ResourceOptions(parent=self, depends_on=[bucket])
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {
                        "sse_algorithm": "aws:kms",
                        "kms_master_key_id": key.arn,
                    },
                    "bucket_key_enabled": True,
                }
            ],
            opts=on_bucket,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=on_bucket
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=on_bucket,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=on_bucket
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-backups",
                    "status": "Enabled",
                    "filter": {"prefix": f"{b.prefix}/"},
                    "expiration": {"days": b.retention_days},
                    # On a versioned bucket expiry only makes the object noncurrent; deleting that
                    # version a day later keeps the whole retention within retentionDays + 1
                    # (N more days would keep personal data twice as long). Backup keys are never
                    # overwritten, so noncurrent versions come from expiry or a deletion.
                    "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_DAYS},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                }
            ],
            opts=on_bucket,
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=json.dumps(tls_only_policy(bucket_arn(s))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[bucket, public_access]),
        )
        self.bucket_name = bucket.bucket
        self.kms_key_arn = key.arn
        self.register_outputs({"bucket_name": self.bucket_name, "kms_key_arn": self.kms_key_arn})


@dataclass(frozen=True)
class BackupJobArgs:
    settings: Settings
    namespace: pulumi.Input[str]
    secret_name: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    # The Redis certificate's Secret: only its ca.crt is mounted, to verify the servers. Required
    # when settings.tls.enabled.
    tls_secret_name: pulumi.Input[str] | None = None


# What the dump needs of the stack Secret: its ACL user's password and the Sentinels' one.
DUMP_SECRET_KEYS = (acl.BACKUP.secret_key, acl.SENTINEL_PASSWORD_KEY)


def dump_env(settings: Settings, tier: t.TierName = "cache") -> list[dict[str, str]]:
    """Explicit, though the rendered scripts default to the cache's: the pod spec alone says which
    tier a container backs up (its Sentinel master name and pods), who the dump connects as and
    whether over TLS."""
    data = t.Topology.of(settings).tier(tier)
    return [
        {"name": "BACKUP_TIER", "value": tier},
        {"name": "MASTER_NAME", "value": data.master_name},
        {"name": "REDIS_ADDRS", "value": " ".join(data.addrs)},
        {"name": "REDIS_SEED_HOST", "value": data.pod_host(0)},
        {"name": "REDIS_USER", "value": acl.BACKUP.name},
        {"name": "REDIS_TLS", "value": "yes" if settings.tls.enabled else "no"},
    ]


def upload_env(tier: t.TierName) -> list[dict[str, str]]:
    # HOME on the scratch tmp: the CLI writes its cache there (the root filesystem is read-only).
    return [{"name": "BACKUP_TIER", "value": tier}, {"name": "HOME", "value": "/tmp"}]


def backup_volumes(settings: Settings, secret_name: Any, tls_secret_name: Any) -> list[dict[str, Any]]:
    """The Secret volumes of the dump: two keys of the stack Secret, and the CA only (no
    certificate or private key: the dump is a client) when TLS is on."""
    volumes: list[dict[str, Any]] = [
        {
            "name": "auth",
            "secret": {
                "secret_name": secret_name,
                "default_mode": 0o440,
                "items": [{"key": k, "path": k} for k in DUMP_SECRET_KEYS],
            },
        }
    ]
    if settings.tls.enabled:
        if tls_secret_name is None:
            raise ValueError("tls.enabled is true but no certificate Secret was given to BackupJob")
        volumes.append(
            {
                "name": "tls",
                "secret": {
                    "secret_name": tls_secret_name,
                    "default_mode": 0o440,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                },
            }
        )
    return volumes


def backup_pod_spec(
    settings: Settings, secret_name: Any, service_account: Any, tls_secret_name: Any = None
) -> dict[str, Any]:
    """The Job's pod: per tier (``BACKUP_ORDER``: state, then cache) ``dump-<tier>`` (Redis image)
    then ``upload-<tier>`` (AWS CLI image); all but the last run as init containers, in order, and
    any failure fails the run. Each dump starts by clearing the scratch, so it holds one dump."""
    b = settings.backup
    script = f"{t.BACKUP_CONFIG_DIR}/backup.sh"
    scripts = {"name": "scripts", "mount_path": t.BACKUP_CONFIG_DIR, "read_only": True}
    scratch = {"name": "scratch", "mount_path": t.BACKUP_DIR}
    tmp = {"name": "tmp", "mount_path": "/tmp"}

    def container(
        step: str, tier: t.TierName, image: str, mounts: list[dict[str, Any]], env: list[dict[str, str]]
    ) -> dict[str, Any]:
        return {
            "name": f"{step}-{tier}",
            "image": image,
            "image_pull_policy": "IfNotPresent",
            "command": ["sh", script, step],
            "env": env,
            "resources": pods.resources(b.resources),
            "security_context": pods.container_security_context(),
            "volume_mounts": mounts,
        }

    auth = {"name": "auth", "mount_path": t.AUTH_DIR, "read_only": True}
    tls = [{"name": "tls", "mount_path": t.TLS_DIR, "read_only": True}] if settings.tls.enabled else []
    steps: list[dict[str, Any]] = []
    for tier in BACKUP_ORDER:
        dump_mounts = [scripts, auth, *tls, scratch, tmp]
        steps.append(container("dump", tier, settings.image, dump_mounts, dump_env(settings, tier)))
        steps.append(container("upload", tier, b.aws_cli_image, [scripts, scratch, tmp], upload_env(tier)))
    return {
        "service_account_name": service_account,
        # IRSA mounts its own projected token (aws-iam-token); the Kubernetes API token is not needed.
        "automount_service_account_token": False,
        "enable_service_links": False,
        "restart_policy": "Never",
        "security_context": pods.pod_security_context(),
        "init_containers": steps[:-1],
        "containers": steps[-1:],
        "volumes": [
            {"name": "scripts", "config_map": {"name": t.Topology.of(settings).backup_config, "default_mode": 0o555}},
            *backup_volumes(settings, secret_name, tls_secret_name),
            {"name": "scratch", "empty_dir": {"size_limit": b.scratch_size}},
            {"name": "tmp", "empty_dir": {"size_limit": "64Mi"}},
        ],
    }


class BackupJob(pulumi.ComponentResource):
    """IRSA role + ServiceAccount, the scripts ConfigMap and the ``redis-backup`` CronJob."""

    role_arn: pulumi.Output[str]
    cronjob_name: pulumi.Output[str]

    def __init__(self, name: str, args: BackupJobArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:BackupJob", name, None, opts)
        s, b = args.settings, args.settings.backup
        topo = t.Topology.of(s)
        child = pulumi.ResourceOptions(parent=self)
        labels = {**topo.labels(COMPONENT), **topo.common_labels}

        role = aws.iam.Role(
            f"{name}-role",
            name=f"dict-redis-{s.stack}-backup",
            description=f"Redis backups of {s.namespace}: {b.service_account} through IRSA",
            assume_role_policy=json.dumps(trust_policy(s)),
            max_session_duration=3600,
            tags=aws_tags(s),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-access",
            role=role.id,
            policy=pulumi.Output.from_input(args.kms_key_arn).apply(lambda arn: json.dumps(access_policy(s, arn))),
            opts=child,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata={
                "name": b.service_account,
                "namespace": args.namespace,
                "labels": labels,
                "annotations": {IRSA_ANNOTATION: role.arn},
            },
            automount_service_account_token=False,
            opts=child,
        )
        k8s.core.v1.ConfigMap(
            f"{name}-scripts",
            metadata={"name": topo.backup_config, "namespace": args.namespace, "labels": labels},
            data=render_scripts(s, BACKUP_SCRIPTS),
            opts=child,
        )
        service_account = account.metadata.apply(lambda m: m["name"])
        cronjob = k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata={"name": topo.backup_cronjob, "namespace": args.namespace, "labels": labels},
            spec={
                "schedule": b.schedule,
                # Two dumps at once would fork two saves on one replica for the same data.
                "concurrency_policy": "Forbid",
                "starting_deadline_seconds": b.starting_deadline_seconds,
                "successful_jobs_history_limit": HISTORY_LIMIT,
                "failed_jobs_history_limit": HISTORY_LIMIT,
                "job_template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "backoff_limit": b.backoff_limit,
                        "active_deadline_seconds": b.active_deadline_seconds,
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": backup_pod_spec(s, args.secret_name, service_account, args.tls_secret_name),
                        },
                    },
                },
            },
            opts=child,
        )
        self.role_arn = role.arn
        self.cronjob_name = cronjob.metadata.apply(lambda m: m["name"])
        self.register_outputs({"role_arn": self.role_arn, "cronjob_name": self.cronjob_name})
