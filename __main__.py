"""DICT Redis cache layer: two data tiers (1 master + 2 replicas each) under 3 Sentinels, on Kubernetes.

    stack config ──► settings ──► namespace
                                  ├─ auth       Secret with every ACL user's password and the Sentinels'
                                  ├─ tls        (optional) Redis and Sentinel certificates: cert-manager or a stack CA
                                  ├─ redis      cache tier: StatefulSet of LRU data nodes (+ headless Service, PDB)
                                  ├─ state      state tier: StatefulSet that never evicts (the decisions)
                                  ├─ sentinel   StatefulSet of Sentinels monitoring both masters (+ client Service, PDB)
                                  ├─ network    NetworkPolicy: clients and the layer itself only
                                  ├─ monitoring (optional) PodMonitor, PrometheusRule, dashboard
                                  ├─ smoke      (optional) Job running the smoke suite once ready
                                  └─ backup     (optional) CronJob: replica RDB → S3, via IRSA
                 settings ──► aws ──► backup-bucket  KMS key + hardened, versioned, expiring bucket

Applications discover each tier's master through the Sentinel Service (``masterName`` for the
cache, ``stateMasterName`` for the state tier); nothing routes writes elsewhere.
"""

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.auth import RedisAuth, RedisAuthArgs
from components.backup import BackupBucket, BackupBucketArgs, BackupJob, BackupJobArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.network import CacheNetworkPolicy, CacheNetworkPolicyArgs
from components.redis import RedisDataPlane, RedisDataPlaneArgs
from components.sentinel import Sentinel, SentinelArgs
from components.settings import load_settings
from components.smoke_job import SmokeJob, SmokeJobArgs
from components.tls import ClusterCertificates, ClusterCertificatesArgs
from components.topology import Topology

settings = load_settings()
topology = Topology.of(settings)

namespace = k8s.core.v1.Namespace("namespace", metadata={"name": settings.namespace, "labels": topology.common_labels})
ns = namespace.metadata.apply(lambda m: m["name"])

auth = RedisAuth("auth", RedisAuthArgs(settings=settings, namespace=ns))
certs = None
if settings.tls.enabled:
    certs = ClusterCertificates("tls", ClusterCertificatesArgs(settings=settings, namespace=ns))
redis = RedisDataPlane(
    "redis",
    RedisDataPlaneArgs(
        settings=settings,
        namespace=ns,
        secret_name=auth.secret_name,
        tls_secret_name=certs.redis_secret_name if certs else None,
        tier="cache",
    ),
)
state = RedisDataPlane(
    "state",
    RedisDataPlaneArgs(
        settings=settings,
        namespace=ns,
        secret_name=auth.secret_name,
        tls_secret_name=certs.redis_secret_name if certs else None,
        tier="state",
    ),
)
sentinel = Sentinel(
    "sentinel",
    SentinelArgs(
        settings=settings,
        namespace=ns,
        secret_name=auth.secret_name,
        tls_secret_name=certs.sentinel_secret_name if certs else None,
    ),
)
network = CacheNetworkPolicy("network", CacheNetworkPolicyArgs(settings=settings, namespace=ns))

if settings.monitoring.enabled:
    # The exporter sidecars come with the StatefulSets; this adds what finds and watches them.
    Monitoring("monitoring", MonitoringArgs(settings=settings, namespace=ns))

pulumi.export("namespace", ns)
pulumi.export("sentinelService", sentinel.service_address)
pulumi.export("masterName", redis.master_name)
pulumi.export("stateMasterName", state.master_name)
pulumi.export("secretName", auth.secret_name)

if settings.smoke.enabled:
    smoke = SmokeJob(
        "smoke",
        SmokeJobArgs(
            settings=settings,
            namespace=ns,
            secret_name=auth.secret_name,
            tls_secret_name=certs.redis_secret_name if certs else None,
        ),
        opts=pulumi.ResourceOptions(depends_on=[redis, state, sentinel, network]),
    )
    pulumi.export("smokeJob", smoke.job_name)

if settings.backup.enabled:
    # One explicit AWS provider: the region is the stack's, never the ambient AWS_REGION.
    aws_provider = aws.Provider("aws", region=settings.backup.region)
    on_aws = pulumi.ResourceOptions(providers=[aws_provider])
    bucket = BackupBucket("backup-bucket", BackupBucketArgs(settings=settings), opts=on_aws)
    backup = BackupJob(
        "backup",
        BackupJobArgs(
            settings=settings,
            namespace=ns,
            secret_name=auth.secret_name,
            kms_key_arn=bucket.kms_key_arn,
            tls_secret_name=certs.redis_secret_name if certs else None,
        ),
        opts=pulumi.ResourceOptions(providers=[aws_provider], depends_on=[redis, state, sentinel, network]),
    )
    pulumi.export("backupBucket", bucket.bucket_name)
    pulumi.export("backupRoleArn", backup.role_arn)
    pulumi.export("backupCronJob", backup.cronjob_name)
