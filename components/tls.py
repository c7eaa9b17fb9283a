"""TLS certificates for the data nodes and the Sentinels: from cert-manager or a stack-managed CA.

One certificate per workload: its Secret (``tls.crt``, ``tls.key``, ``ca.crt``, named by the
topology) is mounted in every pod of that StatefulSet, so the certificate names every pod's stable
DNS name plus the Services in front of them. Redis reads the files only at start, so a renewal
takes effect at the next roll. ``tls.source`` picks who issues it:

``cert-manager`` (default): a cert-manager ``Certificate`` signed by the cluster's issuer
(``tls.issuerName``). The private keys never enter the Pulumi state, and cert-manager renews the
certificate ``tls.renewBeforeHours`` before expiry without a ``pulumi up``.

``stack-ca``: the stack keeps its own CA with pulumi-tls (ECDSA P-256 CA, one key, CSR and signed
certificate per workload) and writes each Secret itself, type ``kubernetes.io/tls``. No
cert-manager needed in the cluster, but every private key lives in the Pulumi state (encrypted as
a secret) and a certificate is renewed only by a ``pulumi up`` inside its renewal window.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components import topology as t
from components.settings import Settings


def redis_dns_names(topo: t.Topology) -> list[str]:
    """Every data pod's name of both tiers (what Sentinel hands out and replicas dial) and the
    headless Services: one certificate serves the cache and the state tier."""
    names: list[str] = []
    for tier in topo.tiers:
        domain = f"{tier.headless}.{topo.namespace}"
        pods = [tier.pod_host(i) for i in range(tier.replicas)]
        names += [*pods, f"{domain}.{t.CLUSTER_DOMAIN}", f"{domain}.svc", domain]
    return names


def sentinel_dns_names(topo: t.Topology) -> list[str]:
    """Every Sentinel pod's name, the headless Service and the client Service."""
    headless = f"{topo.sentinel_headless}.{topo.namespace}"
    service = f"{topo.sentinel}.{topo.namespace}"
    pods = [topo.sentinel_pod_host(i) for i in range(topo.sentinel_replicas)]
    return [*pods, f"{headless}.{t.CLUSTER_DOMAIN}", f"{service}.{t.CLUSTER_DOMAIN}", f"{service}.svc", service]


# Servers for clients, and clients of each other (replication, Sentinel to Redis): the same
# usages in cert-manager's spelling and in pulumi-tls's (RFC 5280 names).
USAGES = ["server auth", "client auth", "digital signature", "key encipherment"]
STACK_CA_LEAF_USES = [usage.replace(" ", "_") for usage in USAGES]
STACK_CA_USES = ["cert_signing", "crl_signing", "digital_signature"]

# (role, Secret name, DNS names) of each workload that gets a certificate.
Workloads = tuple[tuple[str, str, list[str]], ...]


def certificate_spec(settings: Settings, secret_name: str, dns_names: list[str]) -> dict[str, object]:
    tls_settings = settings.tls
    return {
        "secretName": secret_name,
        "duration": f"{tls_settings.duration_hours}h",
        "renewBefore": f"{tls_settings.renew_before_hours}h",
        # No commonName: clients verify the DNS names, and a pod's full name passes the 64-byte
        # limit of a common name with any namespace longer than five characters.
        "dnsNames": dns_names,
        "usages": list(USAGES),
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "issuerRef": {"name": tls_settings.issuer_name, "kind": tls_settings.issuer_kind, "group": "cert-manager.io"},
    }


@dataclass(frozen=True)
class ClusterCertificatesArgs:
    settings: Settings
    namespace: pulumi.Input[str]


class ClusterCertificates(pulumi.ComponentResource):
    """The Redis and Sentinel certificates; their Secrets are named by the topology."""

    redis_secret_name: pulumi.Output[str]
    sentinel_secret_name: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterCertificatesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:ClusterCertificates", name, None, opts)
        topo = t.Topology.of(args.settings)
        workloads = (
            ("redis", topo.redis_tls_secret, redis_dns_names(topo)),
            ("sentinel", topo.sentinel_tls_secret, sentinel_dns_names(topo)),
        )
        if args.settings.tls.source == "stack-ca":
            made = self._from_stack_ca(name, args, topo, workloads)
        else:
            made = self._from_cert_manager(name, args, topo, workloads)
        self.redis_secret_name = made["redis"]
        self.sentinel_secret_name = made["sentinel"]
        self.register_outputs(
            {"redis_secret_name": self.redis_secret_name, "sentinel_secret_name": self.sentinel_secret_name}
        )

    def _from_cert_manager(
        self, name: str, args: ClusterCertificatesArgs, topo: t.Topology, workloads: Workloads
    ) -> dict[str, pulumi.Output[str]]:
        """One cert-manager Certificate per workload; cert-manager writes (and renews) its Secret."""
        made: dict[str, pulumi.Output[str]] = {}
        for role, secret, names in workloads:
            cert = k8s.apiextensions.CustomResource(
                f"{name}-{role}",
                api_version="cert-manager.io/v1",
                kind="Certificate",
                metadata={"name": secret, "namespace": args.namespace, "labels": topo.common_labels},
                spec=certificate_spec(args.settings, secret, names),
                opts=pulumi.ResourceOptions(parent=self),
            )
            made[role] = cert.metadata.apply(lambda _m, secret=secret: secret)
        return made

    def _from_stack_ca(
        self, name: str, args: ClusterCertificatesArgs, topo: t.Topology, workloads: Workloads
    ) -> dict[str, pulumi.Output[str]]:
        """A CA kept in the stack signs one certificate per workload; the stack writes the Secrets.

        The private keys are marked secret wherever they travel (the CSRs, the signing, the
        Secrets), so the state holds them encrypted and no preview or render shows them.
        """
        s = args.settings.tls
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca_key_pem = pulumi.Output.secret(ca_key.private_key_pem)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key_pem,
            is_ca_certificate=True,
            # No intermediates: the CA signs the workload certificates directly.
            max_path_length=0,
            allowed_uses=STACK_CA_USES,
            subject={"common_name": f"{topo.redis} {args.settings.stack} CA", "organization": "dict-redis"},
            validity_period_hours=s.ca_duration_hours,
            # Re-issued (and every certificate with it) once less than a workload certificate's
            # lifetime is left, so nothing it signs outlives it.
            early_renewal_hours=s.duration_hours,
            set_subject_key_id=True,
            opts=child,
        )
        made: dict[str, pulumi.Output[str]] = {}
        for role, secret_name, names in workloads:
            key = tls.PrivateKey(f"{name}-{role}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
            key_pem = pulumi.Output.secret(key.private_key_pem)
            request = tls.CertRequest(
                f"{name}-{role}-csr",
                private_key_pem=key_pem,
                dns_names=names,
                # The workload's name: a pod's full DNS name would pass the 64-byte limit of a
                # common name; clients verify the DNS names anyway.
                subject={"common_name": secret_name},
                opts=child,
            )
            cert = tls.LocallySignedCert(
                f"{name}-{role}-cert",
                cert_request_pem=request.cert_request_pem,
                ca_private_key_pem=ca_key_pem,
                ca_cert_pem=ca.cert_pem,
                allowed_uses=STACK_CA_LEAF_USES,
                validity_period_hours=s.duration_hours,
                early_renewal_hours=s.renew_before_hours,
                set_subject_key_id=True,
                opts=child,
            )
            # cert-manager's Secret layout, so every mount, the exporter, backup and smoke Job
            # read it unchanged.
            tls_secret = k8s.core.v1.Secret(
                f"{name}-{role}-secret",
                metadata={"name": secret_name, "namespace": args.namespace, "labels": topo.common_labels},
                type="kubernetes.io/tls",
                string_data={
                    "tls.crt": pulumi.Output.secret(cert.cert_pem),
                    "tls.key": key_pem,
                    "ca.crt": pulumi.Output.secret(ca.cert_pem),
                },
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["data", "stringData"]),
            )
            made[role] = tls_secret.metadata.apply(lambda m: m["name"])
        return made
