"""S3 on loopback for the backup drill and tests: moto's server, with a bucket set up like prod's.

The stack's bucket (components/backup.py) has SSE-KMS with its own key, versioning, the four
public-access blocks and BucketOwnerEnforced; the stand-in bucket gets the same so the scripts
meet the same object metadata (``ServerSideEncryption: aws:kms``, version ids). What moto does not
do, and so is not proven here: enforcing bucket policies or IAM (the TLS-only policy, the role's
prefix scope) and verifying ``x-amz-checksum-sha256`` on upload (moto stores the value it is
given); the tests of the stack assert those settings instead.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

# Dummy credentials for moto only (it accepts any); the stack itself has no access keys.
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "moto-testing", "AWS_SECRET_ACCESS_KEY": "moto-testing"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class MotoS3:
    endpoint: str
    region: str
    bucket: str
    kms_key_id: str

    def client(self, service: str = "s3") -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )

    def env(self) -> dict[str, str]:
        """What backup.sh / restore.sh need to use this bucket instead of the stack's."""
        return {
            **MOTO_CREDENTIALS,
            "S3_ENDPOINT_URL": self.endpoint,
            "BACKUP_BUCKET": self.bucket,
            "AWS_REGION": self.region,
        }

    def create_bucket(self, name: str) -> str:
        """A bucket like the stack's: SSE-KMS with a rotating key, versioning, no public access."""
        kms = self.client("kms")
        key_id = kms.create_key(Description=f"{name} backups")["KeyMetadata"]["KeyId"]
        kms.enable_key_rotation(KeyId=key_id)
        s3 = self.client()
        config = (
            {} if self.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
        )
        s3.create_bucket(Bucket=name, **config)
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id},
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_ownership_controls(
            Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        )
        return key_id


@contextlib.contextmanager
def moto_s3(bucket: str = "dict-redis-backups-drill", region: str = "sa-east-1") -> Iterator[MotoS3]:
    """moto's S3 (and KMS) on a free loopback port with one prod-like bucket; stopped on exit."""
    port = free_port()
    # moto's server logs every request through werkzeug; the drill's output is its report.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        # moto keeps its buckets and keys in process-wide state, not per server: a second server
        # in one process would find the first one's bucket. Each stand-in starts empty.
        with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10):
            pass
        probe = MotoS3(endpoint, region, bucket, "")
        key_id = probe.create_bucket(bucket)
        yield MotoS3(probe.endpoint, region, bucket, key_id)
    finally:
        server.stop()
