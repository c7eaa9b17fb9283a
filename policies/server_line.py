"""Policy: the data nodes and Sentinels run a server line and minor version that is rehearsed.

The tests here run two server lines from Debian's packages (``components/server_lines.py``):
Valkey 8.0 (the Redis 7.2 line) and Redis 7.0. Server lines differ where a payments system feels
it (Redis 7.2 changed ``WAIT``), so an image whose line and minor version no test runs is
reported: advisory by default (dev), mandatory in prod, unless the stack's pack config
acknowledges that exact image (``acknowledgedImages``), e.g. while a new version is being
rehearsed elsewhere.

The pack imports nothing from the program, so the proven lines are this policy's config
default; a test keeps them equal to ``components/server_lines.py``.
"""

from __future__ import annotations

import re

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from policies import workloads as w
from policies.kubernetes import kubernetes_objects
from policies.pack_config import SENTINEL_COMPONENT, SERVER_COMPONENT, as_list, describe, option, schema

# "<repository> <major.minor>" of every line the tests run: the upstream image repository (a
# registry host and Docker Hub's "library/" are not part of it), so a rebuild such as
# bitnami/redis or a private mirror counts as unrehearsed until a stack acknowledges it.
PROVEN_DEFAULT = ["valkey/valkey 8.0", "redis 7.0"]

_SCHEMA = schema(
    {
        "proven": {
            "type": "array",
            "items": {"type": "string"},
            "default": PROVEN_DEFAULT,
            "description": "image repositories and minor versions the tests run, as '<repository> <major.minor>'",
        },
        "acknowledgedImages": {
            "type": "array",
            "items": {"type": "string"},
            "default": [],
            "description": "exact image references accepted although their line or version is not rehearsed",
        },
    }
)

_REFERENCE = re.compile(r"^(?P<name>[^@]+?)(?::(?P<tag>[\w][\w.-]*))?(?:@sha256:[0-9a-f]{64})?$")
_VERSION_TAG = re.compile(r"^v?(?P<major>\d+)\.(?P<minor>\d+)(?:[.\-_].*)?$")


def image_server(image: str) -> tuple[str, str | None]:
    """``(repository, major.minor)`` read off an image reference: ``valkey/valkey:8.0.1-alpine``
    is ``("valkey/valkey", "8.0")``, ``docker.io/library/redis:7.0.15`` is ``("redis", "7.0")``.
    The registry host (a first path part with a dot, a colon or ``localhost``) and ``library/``
    are dropped; the minor version is None when the tag names none (a digest alone, or a tag such
    as ``alpine``)."""
    match = _REFERENCE.match(image.strip())
    if not match:
        return image, None
    parts, tag = match.group("name").split("/"), match.group("tag") or ""
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    version = _VERSION_TAG.match(tag)
    return "/".join(parts), f"{version.group('major')}.{version.group('minor')}" if version else None


def _validate(args: StackValidationArgs, report: ReportViolation) -> None:
    proven = {str(p).strip() for p in as_list(option(args, _SCHEMA, "proven"))}
    acknowledged = {str(i).strip() for i in as_list(option(args, _SCHEMA, "acknowledgedImages"))}
    listed = ", ".join(sorted(proven)) or "none"
    for workload in kubernetes_objects(args, *w.WORKLOAD_KINDS):
        role = w.redis_role(workload.props)
        if role not in (SERVER_COMPONENT, SENTINEL_COMPONENT):
            continue
        main = w.main_container(workload.props, role)
        image = str(main.spec.get("image") or "") if main is not None else ""
        if not image or image in acknowledged:
            continue
        repository, minor = image_server(image)
        if minor is not None and f"{repository} {minor}" in proven:
            continue
        runs = f"{repository} {minor}" if minor else f"{repository} of a version its tag does not name"
        report(
            f"{describe(workload.resource_type, workload.props, workload.name)}, container {main.name!r}: "
            f"image {image!r} runs {runs}, which no test here rehearses (rehearsed: {listed}). Use an image "
            "of a rehearsed line and minor version (the default is valkey/valkey:8.0.1-alpine; a digest goes "
            "beside its tag, name:tag@sha256:...), or list this exact image under acknowledgedImages in the "
            "stack's pack config once it is proven elsewhere.",
            workload.urn,
        )


server_line_rehearsed = StackValidationPolicy(
    name="redis-server-line-rehearsed",
    description="Data nodes and Sentinels run a server line and minor version the tests rehearse.",
    enforcement_level=EnforcementLevel.ADVISORY,
    config_schema=_SCHEMA,
    validate=_validate,
)

POLICIES = [server_line_rehearsed]
