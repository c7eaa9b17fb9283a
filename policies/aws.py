"""AWS rules for the backup bucket and the backup job's access to it (pulumi-aws 7 type tokens).

In pulumi-aws 7 a bucket's encryption, versioning, public-access block, lifecycle and policy are
separate resources pointing at it through their ``bucket`` input, so "every bucket has X" is a stack
rule that pairs them up. Under the engine the pairing comes from ``property_dependencies`` (known
even in preview, when the bucket's name may not be); the mock runtime sends no dependency data, so
the rule falls back to matching the ``bucket`` value against the bucket's id, name or ARN.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from policies import workloads as w
from policies.kubernetes import kubernetes_objects
from policies.pack_config import as_list, as_map, describe, option, plain, schema, whole

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

BUCKET = {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}
SSE = {
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
}
VERSIONING = {"aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2"}
PUBLIC_ACCESS_BLOCK = {"aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"}
LIFECYCLE = {
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2",
}
BUCKET_POLICY = {"aws:s3/bucketPolicy:BucketPolicy"}
IAM_ROLE = "aws:iam/role:Role"
IAM_USER_TYPES = {
    "aws:iam/user:User",
    "aws:iam/accessKey:AccessKey",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/userLoginProfile:UserLoginProfile",
}
KMS_ALGORITHMS = {"aws:kms", "aws:kms:dsse"}


def _known(props: Mapping[str, Any], key: str) -> Any:
    """A value, or None when it is absent or unknown in preview (it then matches nothing)."""
    try:
        return props.get(key)
    except UnknownValueError:
        return None


def _bucket_keys(bucket: PolicyResource) -> set[str]:
    keys = {str(_known(bucket.props, k)) for k in ("id", "bucket", "arn")} - {"None", ""}
    return keys | {bucket.name}


def attached(args: StackValidationArgs, bucket: PolicyResource, types: set[str]) -> list[PolicyResource]:
    """Resources of ``types`` whose ``bucket`` input is this bucket."""
    keys = _bucket_keys(bucket)
    found = []
    for resource in args.resources:
        if resource.resource_type not in types:
            continue
        deps = resource.property_dependencies.get("bucket") or []
        if deps:
            if any(dep.urn == bucket.urn for dep in deps):
                found.append(resource)
        elif str(resource.props.get("bucket")) in keys:
            found.append(resource)
    return found


def buckets(args: StackValidationArgs) -> Iterator[PolicyResource]:
    return (r for r in args.resources if r.resource_type in BUCKET)


def _name(resource: PolicyResource) -> str:
    return describe(resource.resource_type, resource.props, resource.name)


def _enabled_rules(config: PolicyResource) -> list[Mapping[str, Any]]:
    return [as_map(rule) for rule in as_list(config.props.get("rules")) if as_map(rule).get("status") == "Enabled"]


# --- encryption with KMS ----------------------------------------------------------------------


def _kms_encrypted(bucket: PolicyResource, configs: list[PolicyResource]) -> bool:
    blocks = [
        as_map(rule).get("applyServerSideEncryptionByDefault")
        for c in configs
        for rule in as_list(c.props.get("rules"))
    ]
    # The deprecated inline form on the Bucket itself still counts.
    inline = as_map(as_map(bucket.props.get("serverSideEncryptionConfiguration")).get("rule"))
    blocks.append(inline.get("applyServerSideEncryptionByDefault"))
    return any(as_map(b).get("sseAlgorithm") in KMS_ALGORITHMS for b in blocks)


def _validate_encryption(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in buckets(args):
        if not _kms_encrypted(bucket, attached(args, bucket, SSE)):
            report(
                f"{_name(bucket)} is not encrypted with KMS: no BucketServerSideEncryptionConfiguration for it "
                "sets sseAlgorithm 'aws:kms'. Add one with apply_server_side_encryption_by_default="
                "{sse_algorithm: 'aws:kms', kms_master_key_id: <a customer-managed key>} and "
                "bucket_key_enabled=True.",
                bucket.urn,
            )


s3_kms_encryption = StackValidationPolicy(
    name="aws-s3-kms-encryption",
    description="Every S3 bucket is encrypted with KMS (aws:kms).",
    enforcement_level=MANDATORY,
    validate=_validate_encryption,
)


# --- versioning -------------------------------------------------------------------------------


def _versioned(args: StackValidationArgs, bucket: PolicyResource) -> bool:
    return any(
        as_map(v.props.get("versioningConfiguration")).get("status") == "Enabled"
        for v in attached(args, bucket, VERSIONING)
    )


def _validate_versioning(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in buckets(args):
        if not _versioned(args, bucket):
            report(
                f"{_name(bucket)} has no BucketVersioning with status 'Enabled', so an overwritten or "
                "deleted backup is gone for good. Add a BucketVersioning for it with "
                "versioning_configuration={status: 'Enabled'}.",
                bucket.urn,
            )


s3_versioning = StackValidationPolicy(
    name="aws-s3-versioning",
    description="Every S3 bucket has versioning enabled.",
    enforcement_level=MANDATORY,
    validate=_validate_versioning,
)


# --- public access block ----------------------------------------------------------------------

_PUBLIC_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _validate_public_access(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in buckets(args):
        blocks = attached(args, bucket, PUBLIC_ACCESS_BLOCK)
        best = max(([f for f in _PUBLIC_FLAGS if b.props.get(f) is True] for b in blocks), key=len, default=[])
        missing = [f for f in _PUBLIC_FLAGS if f not in best]
        if missing:
            found = (
                "no BucketPublicAccessBlock"
                if not blocks
                else f"a BucketPublicAccessBlock without {', '.join(missing)}"
            )
            report(
                f"{_name(bucket)} has {found}. Set all four of block_public_acls, block_public_policy, "
                "ignore_public_acls and restrict_public_buckets to True so no ACL or policy can ever "
                "make a backup public.",
                bucket.urn,
            )


s3_public_access_block = StackValidationPolicy(
    name="aws-s3-public-access-block",
    description="Every S3 bucket has all four public-access blocks on.",
    enforcement_level=MANDATORY,
    validate=_validate_public_access,
)


# --- lifecycle expiration within the retention ------------------------------------------------

_RETENTION_SCHEMA = schema(
    {"retentionDays": {"type": "integer", "default": 30, "minimum": 1, "description": "backup retention in days"}}
)


def _validate_lifecycle(args: StackValidationArgs, report: ReportViolation) -> None:
    retention = whole(option(args, _RETENTION_SCHEMA, "retentionDays")) or 30
    for bucket in buckets(args):
        rules = [r for c in attached(args, bucket, LIFECYCLE) for r in _enabled_rules(c)]
        days = [whole(as_map(r.get("expiration")).get("days")) for r in rules]
        days = [d for d in days if d is not None]
        if not days:
            report(
                f"{_name(bucket)} has no enabled lifecycle rule expiring objects, so backups are kept "
                f"forever. Add a BucketLifecycleConfiguration rule with status 'Enabled' and "
                f"expiration={{days: {retention}}} (the retention).",
                bucket.urn,
            )
        elif min(days) > retention:
            report(
                f"{_name(bucket)} expires objects after {min(days)} days, beyond the {retention}-day "
                f"retention. Set the lifecycle rule's expiration.days to at most {retention}.",
                bucket.urn,
            )


s3_lifecycle_retention = StackValidationPolicy(
    name="aws-s3-lifecycle-retention",
    description="Every S3 bucket has an enabled lifecycle rule expiring objects within the retention.",
    enforcement_level=MANDATORY,
    config_schema=_RETENTION_SCHEMA,
    validate=_validate_lifecycle,
)


def _validate_noncurrent(args: StackValidationArgs, report: ReportViolation) -> None:
    retention = whole(option(args, _RETENTION_SCHEMA, "retentionDays")) or 30
    for bucket in buckets(args):
        if not _versioned(args, bucket):
            continue
        rules = [r for c in attached(args, bucket, LIFECYCLE) for r in _enabled_rules(c)]
        days = [whole(as_map(r.get("noncurrentVersionExpiration")).get("noncurrentDays")) for r in rules]
        days = [d for d in days if d is not None]
        if not days or min(days) > retention:
            kept = "never expires noncurrent versions" if not days else f"keeps noncurrent versions {min(days)} days"
            report(
                f"{_name(bucket)} is versioned but {kept}, "
                f"so expired or overwritten backups outlive the {retention}-day retention. Add "
                f"noncurrent_version_expiration={{noncurrent_days: {retention}}} to its lifecycle rule.",
                bucket.urn,
            )


s3_noncurrent_version_expiration = StackValidationPolicy(
    name="aws-s3-noncurrent-version-expiration",
    description="Versioned S3 buckets also expire noncurrent versions within the retention.",
    enforcement_level=ADVISORY,
    config_schema=_RETENTION_SCHEMA,
    validate=_validate_noncurrent,
)


# --- TLS-only bucket policy -------------------------------------------------------------------


def _policy_document(value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return as_map(plain(value))


def denies_insecure_transport(document: Mapping[str, Any]) -> bool:
    """A Deny for every principal on s3:* when aws:SecureTransport is false."""
    for statement in as_list(document.get("Statement")):
        statement = as_map(statement)
        principal = statement.get("Principal")
        everyone = principal == "*" or "*" in [str(p) for p in as_list(as_map(principal).get("AWS"))]
        actions = {str(a) for a in as_list(statement.get("Action"))}
        condition = as_map(statement.get("Condition"))
        insecure = any(
            str(as_map(condition.get(op)).get("aws:SecureTransport")).lower() == "false"
            for op in ("Bool", "BoolIfExists")
        )
        if statement.get("Effect") == "Deny" and everyone and actions & {"s3:*", "*"} and insecure:
            return True
    return False


def _validate_tls(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in buckets(args):
        policies = attached(args, bucket, BUCKET_POLICY)
        if not any(denies_insecure_transport(_policy_document(p.props.get("policy"))) for p in policies):
            report(
                f"{_name(bucket)} has no bucket policy refusing plain HTTP. Add a BucketPolicy with a "
                "statement {Effect: Deny, Principal: '*', Action: 's3:*', Resource: [<bucket arn>, "
                "<bucket arn>/*], Condition: {Bool: {'aws:SecureTransport': 'false'}}}.",
                bucket.urn,
            )


s3_tls_only = StackValidationPolicy(
    name="aws-s3-tls-only",
    description="Every S3 bucket has a policy denying requests without TLS.",
    enforcement_level=MANDATORY,
    validate=_validate_tls,
)


# --- no IAM users or access keys --------------------------------------------------------------


def _validate_no_iam_users(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type in IAM_USER_TYPES:
        report(
            f"{describe(args.resource_type, args.props, args.name)}: IAM users and access keys are long-lived "
            "credentials that end up in Secrets and leak. Remove it and give the workload an IAM role "
            "through its service account (IRSA: eks.amazonaws.com/role-arn)."
        )


no_iam_users = ResourceValidationPolicy(
    name="aws-no-iam-users",
    description="No IAM user, access key or user policy: workloads use IAM roles.",
    enforcement_level=MANDATORY,
    validate=_validate_no_iam_users,
)


# --- no AWS credentials in env or Secrets -----------------------------------------------------

_CREDENTIAL_NAMES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
_CREDENTIAL_TEXT = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|aws_secret_access_key|aws_access_key_id", re.IGNORECASE)


def _validate_no_static_credentials(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not args.resource_type.startswith("kubernetes:"):
        return
    props = args.props
    what = describe(args.resource_type, props, args.name)
    found: list[str] = []
    for container in w.containers(props):
        for env in as_list(container.spec.get("env")):
            name = str(as_map(env).get("name") or "")
            if name.upper() in _CREDENTIAL_NAMES:
                found.append(f'container "{container.name}" sets {name}')
    if w.kind(props) == "Secret":
        for field in ("data", "stringData"):
            for key, value in as_map(props.get(field)).items():
                if str(key).upper() in _CREDENTIAL_NAMES or _CREDENTIAL_TEXT.search(f"{key}\n{value}"):
                    found.append(f"{field} key {key!r} holds AWS credentials")
    if found:
        report(
            f"{what}: {'; '.join(found)}. Static AWS keys do not expire and leak with the Secret or the "
            "pod spec. Remove them; bind the pod's service account to an IAM role "
            "(eks.amazonaws.com/role-arn) so the SDK gets short-lived credentials."
        )


no_static_credentials = ResourceValidationPolicy(
    name="aws-no-static-credentials",
    description="No AWS credentials in container env or Kubernetes Secrets.",
    enforcement_level=MANDATORY,
    validate=_validate_no_static_credentials,
)


# --- the backup job's service account is bound to an IAM role ---------------------------------

ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/(?:.*/)?([\w+=,.@-]+)$")
_IRSA_SCHEMA = schema(
    {
        "backupJobs": {
            "type": "array",
            "items": {"type": "string"},
            "default": ["redis-backup"],
            "description": "names of the CronJobs/Jobs that talk to AWS",
        }
    }
)


def _role_trusts(role: PolicyResource, ns: str, account: str) -> bool:
    document = _policy_document(role.props.get("assumeRolePolicy"))
    text = json.dumps(document)
    subjects = re.findall(r"system:serviceaccount:[^\"]+", text)
    return "sts:AssumeRoleWithWebIdentity" in text and any(
        fnmatch.fnmatchcase(f"system:serviceaccount:{ns}:{account}", s) for s in subjects
    )


def _validate_irsa(args: StackValidationArgs, report: ReportViolation) -> None:
    names = {str(n) for n in as_list(option(args, _IRSA_SCHEMA, "backupJobs"))}
    jobs = [j for j in kubernetes_objects(args, "CronJob", "Job") if w.object_name(j.props) in names]
    accounts = kubernetes_objects(args, "ServiceAccount")
    roles = [r for r in args.resources if r.resource_type == IAM_ROLE]
    for job in jobs:
        what = describe(job.resource_type, job.props, job.name)
        ns = w.namespace(job.props)
        account = str(w.pod_spec(job.props).get("serviceAccountName") or "")
        if not account:
            report(
                f"{what} runs under the namespace's default service account. Give it its own "
                f"ServiceAccount annotated {ROLE_ANNOTATION}: <IAM role ARN> and set serviceAccountName.",
                job.urn,
            )
            continue
        sa = next((a for a in accounts if w.namespace(a.props) == ns and w.object_name(a.props) == account), None)
        arn = str(as_map(w.metadata(sa.props).get("annotations")).get(ROLE_ANNOTATION) or "") if sa else ""
        if not arn:
            missing = "is not in the stack" if sa is None else f"has no {ROLE_ANNOTATION} annotation"
            report(
                f"{what}: its service account {ns}/{account} {missing}, so the job has no IAM role and "
                f"would need static keys. Create the ServiceAccount with the annotation {ROLE_ANNOTATION}: "
                "<ARN of the backup role> (IRSA).",
                job.urn,
            )
            continue
        role_name = (_ROLE_ARN.match(arn) or [None, None])[1]
        role = next(
            (
                r
                for r in roles
                if arn in {str(_known(r.props, "arn")), str(_known(r.props, "id"))}
                or (role_name and role_name in {str(_known(r.props, "name")), r.name})
            ),
            None,
        )
        if role is None and not _ROLE_ARN.match(arn):
            report(
                f"{what}: service account {ns}/{account} is annotated {ROLE_ANNOTATION}: {arn!r}, which is "
                "neither an IAM role ARN nor a role of this stack. Annotate it with the backup role's ARN.",
                job.urn,
            )
        elif role is not None and not _role_trusts(role, ns, account):
            report(
                f"{what}: {_name(role)} does not trust service account {ns}/{account}: its assume-role "
                "policy needs sts:AssumeRoleWithWebIdentity from the cluster's OIDC provider with the "
                f"condition <issuer>:sub = system:serviceaccount:{ns}:{account}.",
                job.urn,
            )


backup_irsa = StackValidationPolicy(
    name="aws-backup-irsa",
    description="The backup job's service account is bound to an IAM role (IRSA) that trusts it.",
    enforcement_level=MANDATORY,
    config_schema=_IRSA_SCHEMA,
    validate=_validate_irsa,
)

POLICIES = [
    s3_kms_encryption,
    s3_versioning,
    s3_public_access_block,
    s3_lifecycle_retention,
    s3_noncurrent_version_expiration,
    s3_tls_only,
    no_iam_users,
    no_static_credentials,
    backup_irsa,
]
