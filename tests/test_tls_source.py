"""``tls.source``: certificates from cert-manager (default) or from a CA the stack keeps (pulumi-tls).

The prod stack is rendered with ``tls.source: stack-ca`` and compared with the default render: the
cert-manager Certificates give way to a pulumi-tls CA, one key + CSR + signed certificate per
workload and a ``kubernetes.io/tls`` Secret of the same name, and nothing else in the stack moves.
The mock runtime (smoke/local/render.py) hands out a unique stand-in PEM per key and certificate, so the
tests can follow each value from the resource that made it to the Secret that carries it, and
prove no private key reaches a rendered file.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components import topology as t
from components.settings import SettingsError, settings_from_config
from components.tls import redis_dns_names, sentinel_dns_names
from policies import analyze
from smoke.local.render import SECRET_SIG, SECRET_VALUE, Registered, Rendered, write_render
from tests.support import render_with

STACK_CA = {"dict-redis:tls": json.dumps({"enabled": True, "source": "stack-ca"})}
COMPONENT = "dict-redis:index:ClusterCertificates"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
SELF_SIGNED = "tls:index/selfSignedCert:SelfSignedCert"
CERT_REQUEST = "tls:index/certRequest:CertRequest"
LOCALLY_SIGNED = "tls:index/locallySignedCert:LocallySignedCert"
LEAF_USES = ["server_auth", "client_auth", "digital_signature", "key_encipherment"]


@pytest.fixture(scope="module")
def stack_ca() -> Rendered:
    return render_with("prod", STACK_CA)


def resource(rendered: Rendered, type_: str, name: str) -> Registered:
    return next(r for r in rendered.resources if r.type == type_ and r.name == name)


def secret_value(value: Any) -> Any:
    """The value inside a secret-marked input; fails when the input is not marked secret."""
    assert isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE, f"not marked secret: {value!r}"
    return value["value"]


def by_kind(rendered: Rendered) -> set[tuple[str, str | None]]:
    """Every object's kind and name; the smoke Job's name follows the config, so it is left out."""
    return {(d["kind"], None if d["kind"] == "Job" else d["metadata"]["name"]) for d in rendered.kubernetes()}


# --- what the stack registers --------------------------------------------------------------------


def test_stack_ca_replaces_the_certificates_with_a_ca_and_secrets_of_the_same_names(
    stack_ca: Rendered, prod: Rendered
) -> None:
    assert stack_ca.kubernetes("Certificate") == []
    tls_resources = sorted((r.type, r.name) for r in stack_ca.resources if r.type.startswith("tls:"))
    assert tls_resources == sorted(
        [
            (PRIVATE_KEY, "tls-ca-key"),
            (SELF_SIGNED, "tls-ca"),
            *[(PRIVATE_KEY, f"tls-{role}-key") for role in ("redis", "sentinel")],
            *[(CERT_REQUEST, f"tls-{role}-csr") for role in ("redis", "sentinel")],
            *[(LOCALLY_SIGNED, f"tls-{role}-cert") for role in ("redis", "sentinel")],
        ]
    )
    ours = [r for r in stack_ca.resources if r.type.startswith("tls:") or r.name.startswith("tls-")]
    assert all(r.parent_type == COMPONENT for r in ours if r.custom)
    # The default (cert-manager) render has Certificates and none of this; everything else is the same.
    assert not any(r.type.startswith("tls:") for r in prod.resources)
    certificates = {("Certificate", "redis-tls"), ("Certificate", "redis-sentinel-tls")}
    secrets = {("Secret", "redis-tls"), ("Secret", "redis-sentinel-tls")}
    assert certificates <= by_kind(prod) and not secrets & by_kind(prod)
    assert by_kind(stack_ca) == (by_kind(prod) - certificates) | secrets


def test_nothing_but_the_certificates_changes_with_the_source(stack_ca: Rendered, prod: Rendered) -> None:
    """Every mount, the exporter, backup job and smoke Job read the same Secret names as before."""
    ignored = {"Certificate", "Secret", "Job"}
    before = {(d["kind"], d["metadata"]["name"]): d for d in prod.kubernetes() if d["kind"] not in ignored}
    after = {(d["kind"], d["metadata"]["name"]): d for d in stack_ca.kubernetes() if d["kind"] not in ignored}
    assert before == after
    # The smoke Job's name follows the stack config (a changed stack runs the suite again); its
    # spec does not change.
    [job_before], [job_after] = prod.kubernetes("Job"), stack_ca.kubernetes("Job")
    assert job_before["spec"] == job_after["spec"]


def test_the_ca_is_an_ecdsa_p256_signing_only_ca_with_the_configured_lifetime(stack_ca: Rendered) -> None:
    for key in ("tls-ca-key", "tls-redis-key", "tls-sentinel-key"):
        assert resource(stack_ca, PRIVATE_KEY, key).inputs == {"algorithm": "ECDSA", "ecdsaCurve": "P256"}
    ca = resource(stack_ca, SELF_SIGNED, "tls-ca").inputs
    assert ca["isCaCertificate"] is True and ca["maxPathLength"] == 0
    assert set(ca["allowedUses"]) == {"cert_signing", "crl_signing", "digital_signature"}
    assert (ca["validityPeriodHours"], ca["earlyRenewalHours"]) == (87600, 2160)
    assert secret_value(ca["privateKeyPem"]) == resource(stack_ca, PRIVATE_KEY, "tls-ca-key").outputs["privateKeyPem"]

    longer = render_with(
        "prod", {"dict-redis:tls": json.dumps({"source": "stack-ca", "durationHours": 720, "caDurationHours": 8760})}
    )
    ca = resource(longer, SELF_SIGNED, "tls-ca").inputs
    assert (ca["validityPeriodHours"], ca["earlyRenewalHours"]) == (8760, 720)
    assert resource(longer, LOCALLY_SIGNED, "tls-redis-cert").inputs["validityPeriodHours"] == 720


@pytest.mark.parametrize(
    ("role", "secret", "dns_names"),
    [("redis", "redis-tls", redis_dns_names), ("sentinel", "redis-sentinel-tls", sentinel_dns_names)],
)
def test_each_workload_gets_its_own_key_and_a_certificate_for_the_cert_manager_dns_names(
    stack_ca: Rendered, prod: Rendered, role: str, secret: str, dns_names: Any
) -> None:
    key_pem = resource(stack_ca, PRIVATE_KEY, f"tls-{role}-key").outputs["privateKeyPem"]
    csr = resource(stack_ca, CERT_REQUEST, f"tls-{role}-csr")
    names = dns_names(t.Topology.of(settings_from_config({}, "prod")))
    # The same names the cert-manager path asks for.
    assert csr.inputs["dnsNames"] == names == prod.find("Certificate", secret)["spec"]["dnsNames"]
    # A short common name (the Secret's), within X.509's 64 bytes whatever the namespace.
    assert csr.inputs["subject"] == {"commonName": secret}
    assert secret_value(csr.inputs["privateKeyPem"]) == key_pem

    cert = resource(stack_ca, LOCALLY_SIGNED, f"tls-{role}-cert")
    ca = resource(stack_ca, SELF_SIGNED, "tls-ca")
    assert cert.inputs["certRequestPem"] == csr.outputs["certRequestPem"]
    assert cert.inputs["caCertPem"] == ca.outputs["certPem"]
    assert (
        secret_value(cert.inputs["caPrivateKeyPem"])
        == resource(stack_ca, PRIVATE_KEY, "tls-ca-key").outputs["privateKeyPem"]
    )
    assert cert.inputs["allowedUses"] == LEAF_USES
    assert [u.replace("_", " ") for u in LEAF_USES] == prod.find("Certificate", secret)["spec"]["usages"]
    assert (cert.inputs["validityPeriodHours"], cert.inputs["earlyRenewalHours"]) == (2160, 360)

    # The Secret: cert-manager's layout (tls.crt, tls.key, ca.crt), every value a Pulumi secret.
    registered = resource(stack_ca, "kubernetes:core/v1:Secret", f"tls-{role}-secret")
    assert registered.inputs["type"] == "kubernetes.io/tls"
    assert registered.inputs["metadata"]["name"] == secret
    assert registered.inputs["metadata"]["namespace"] == "redis"
    data = secret_value(registered.inputs["stringData"])
    assert data == {"tls.crt": cert.outputs["certPem"], "tls.key": key_pem, "ca.crt": ca.outputs["certPem"]}
    assert stack_ca.find("Secret", secret)["stringData"] == dict.fromkeys(data, "<redacted>")


def test_the_statefulsets_mount_the_stack_ca_secrets(stack_ca: Rendered) -> None:
    for name, secret in (("redis", "redis-tls"), ("redis-sentinel", "redis-sentinel-tls")):
        volumes = stack_ca.find("StatefulSet", name)["spec"]["template"]["spec"]["volumes"]
        assert next(v for v in volumes if v["name"] == "tls")["secret"]["secretName"] == secret


# --- secrets stay secret --------------------------------------------------------------------------


def test_no_private_key_or_password_reaches_a_rendered_file(stack_ca: Rendered, tmp_path: Path) -> None:
    keys = [r.outputs["privateKeyPem"] for r in stack_ca.resources if r.type == PRIVATE_KEY]
    assert len(keys) == 3 and set(keys) <= set(stack_ca.generated_secrets)
    write_render(stack_ca, tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("locallysignedcert-") for p in files)
    for path in files:
        text = path.read_text()
        assert "PRIVATE KEY" not in text, f"{path} carries a private key"
        for generated in stack_ca.generated_secrets:
            assert generated not in text, f"{path} carries a generated secret"


@pytest.mark.parametrize("name", ["redis-tls", "redis-sentinel-tls"])
def test_the_secrets_pass_strict_schema_validation(stack_ca: Rendered, tmp_path: Path, name: str) -> None:
    rows = write_render(stack_ca, tmp_path)
    [path] = [p for kind, n, p in rows if (kind, n) == ("Secret", name)]
    kubernetes_validate.validate(yaml.safe_load(path.read_text()), "1.33.0", strict=True)


# --- policies ------------------------------------------------------------------------------------


def _violations(resources: list[Registered]) -> list[analyze.Violation]:
    config = analyze.load_pack_config(analyze.CONFIG_DIR / "prod.json")
    return analyze.run_analyzer(analyze.in_process_pack(), analyze.analyzed(resources), config)[1]


def test_stack_ca_prod_passes_the_policy_pack(stack_ca: Rendered) -> None:
    assert _violations(stack_ca.resources) == []


def test_redis_tls_required_needs_the_secret_to_be_a_tls_secret(stack_ca: Rendered) -> None:
    """The pack recognises the stack's Secrets by their type: as Opaque Secrets they are no certificate."""
    opaque = []
    for r in stack_ca.resources:
        if r.inputs.get("kind") == "Secret" and r.inputs.get("type") == "kubernetes.io/tls":
            inputs = {**r.inputs, "type": "Opaque"}
            r = Registered(r.type, r.name, inputs, r.custom, r.urn, r.id, {**r.outputs, "type": "Opaque"})
        opaque.append(r)
    violations = _violations(opaque)
    assert {v.policy for v in violations} == {"redis-tls-required"}
    # The cache tier, the state tier and the Sentinels.
    assert len(violations) == 3 and all("mounts no certificate" in v.message for v in violations)


# --- bad settings --------------------------------------------------------------------------------


def test_an_unknown_source_is_refused_naming_the_key_and_the_valid_values() -> None:
    with pytest.raises(SettingsError) as raised:
        settings_from_config({"dict-redis:tls": json.dumps({"source": "vault"})}, "prod")
    [problem] = raised.value.problems
    assert problem.startswith("dict-redis:tls.source = 'vault': ")
    assert "'cert-manager'" in problem and "'stack-ca'" in problem


def test_a_ca_that_would_not_outlive_its_certificates_is_refused() -> None:
    config = {"dict-redis:tls": json.dumps({"source": "stack-ca", "durationHours": 2160, "caDurationHours": 3000})}
    with pytest.raises(SettingsError) as raised:
        settings_from_config(config, "prod")
    [problem] = raised.value.problems
    assert problem.startswith("dict-redis:tls.caDurationHours = 3000: must be at least twice tls.durationHours (4320)")
    # cert-manager ignores the CA lifetime, so the same numbers are fine there.
    config["dict-redis:tls"] = json.dumps({"durationHours": 2160, "caDurationHours": 3000})
    assert settings_from_config(config, "prod").tls.source == "cert-manager"


# --- the chain's shape works for real ------------------------------------------------------------

# pulumi-tls's allowed_uses names as X.509 extensions (terraform-provider-tls maps them the same way).
_KEY_USAGES = {
    "digital_signature": "digital_signature",
    "key_encipherment": "key_encipherment",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
}


def _issue(
    inputs: dict[str, Any], subject: str, key: Any, signer: Any, issuer: Any, dns_names: list[str] | None = None
) -> Any:
    """A certificate with the extensions pulumi-tls would give ``inputs`` (its allowedUses, CA flag,
    path length and DNS names), made with the ``cryptography`` package as smoke/local/certificates.py does."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    uses = set(inputs["allowedUses"])
    granted = {_KEY_USAGES[use] for use in uses if use in _KEY_USAGES}
    usage = x509.KeyUsage(
        digital_signature="digital_signature" in granted,
        content_commitment=False,
        key_encipherment="key_encipherment" in granted,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign="key_cert_sign" in granted,
        crl_sign="crl_sign" in granted,
        encipher_only=False,
        decipher_only=False,
    )
    is_ca = bool(inputs.get("isCaCertificate"))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=int(inputs["validityPeriodHours"])))
        .add_extension(usage, critical=True)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=int(inputs["maxPathLength"]) if is_ca else None),
            critical=True,
        )
    )
    extended = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}
    if uses & set(extended):
        oids = [oid for use, oid in extended.items() if use in uses]
        builder = builder.add_extension(x509.ExtendedKeyUsage(oids), critical=False)
    if dns_names:
        sans = x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names])
        builder = builder.add_extension(sans, critical=False)
    return builder.sign(signer, hashes.SHA256())


def test_a_chain_of_the_rendered_shape_verifies_a_pod_name_in_a_tls_handshake(
    stack_ca: Rendered, tmp_path: Path
) -> None:
    """OpenSSL (Python's ssl, as redis-py uses it) accepts the CA and the Redis certificate the
    stack asks pulumi-tls for: CA usages, path length, leaf usages and DNS names together."""
    import ssl

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_inputs = resource(stack_ca, SELF_SIGNED, "tls-ca").inputs
    leaf_inputs = resource(stack_ca, LOCALLY_SIGNED, "tls-redis-cert").inputs
    names = resource(stack_ca, CERT_REQUEST, "tls-redis-csr").inputs["dnsNames"]
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _issue(ca_inputs, "dict-redis CA", ca_key, ca_key, None)
    leaf = _issue(leaf_inputs, names[0], leaf_key, ca_key, ca.subject, names)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(pem))
    (tmp_path / "tls.crt").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "tls.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )

    def handshake(host: str) -> None:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
        client = ssl.create_default_context(cafile=tmp_path / "ca.crt")
        wires = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
        c = client.wrap_bio(wires[0], wires[1], server_hostname=host)
        s = server.wrap_bio(wires[2], wires[3], server_side=True)
        for _ in range(10):
            for side in (c, s):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
            wires[2].write(wires[1].read())
            wires[0].write(wires[3].read())
        assert c.version() is not None and s.version() is not None

    handshake("redis-1.redis-headless.redis.svc.cluster.local")
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake("redis-sentinel-1.redis-sentinel-headless.redis.svc.cluster.local")
