"""The stack's credentials: one generated password per ACL user and the Sentinels' password, in one Secret.

Each value only ever travels as a Pulumi secret Output into the Secret's ``stringData``, one key
per user (``components/acl.py`` names them). Pods mount the Secret as files that the scripts read
(see ``common.sh``), never as env vars of the Redis or Sentinel containers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import acl
from components.acl import GENERATED_PASSWORD_LENGTH
from components.settings import Settings
from components.topology import Topology


def ignored_secret_paths() -> list[str]:
    """``ignore_changes`` paths of the Secret: each key ``pulumi up`` must leave alone, one by one.

    The password rotation owns a key's value once it exists, so Pulumi must not put its first
    value back. Ignoring each key (``stringData["app-password"]``, the engine's property-path
    syntax for a map key) rather than all of ``stringData`` still lets a key that the Secret
    lacks be added: a stack created before a user existed gets that user's password on the next
    ``pulumi up`` (docs/runbooks/password-rotation.md, "Upgrades").
    """
    return [f'stringData["{key}"]' for key in acl.secret_keys()]


@dataclass(frozen=True)
class RedisAuthArgs:
    # ``settings.redis_password`` (secret config ``dict-redis:redisPassword``), when set, is the
    # Sentinels' password; otherwise one is generated. ACL users' passwords are always generated.
    settings: Settings
    namespace: pulumi.Input[str]


class RedisAuth(pulumi.ComponentResource):
    """The Secret holding every user's password (key ``<user>-password``) and the Sentinels' one."""

    secret_name: pulumi.Output[str]

    def __init__(self, name: str, args: RedisAuthArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dict-redis:index:RedisAuth", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        topo = Topology.of(args.settings)

        def generated(resource_name: str) -> pulumi.Output[str]:
            return random.RandomPassword(
                resource_name, length=GENERATED_PASSWORD_LENGTH, special=False, opts=child
            ).result

        if args.settings.redis_password is None:
            sentinel_password = generated(f"{name}-password")
        else:
            sentinel_password = pulumi.Output.secret(args.settings.redis_password)
        data: dict[str, pulumi.Input[str]] = {u.secret_key: generated(f"{name}-password-{u.name}") for u in acl.USERS}
        data[acl.SENTINEL_PASSWORD_KEY] = sentinel_password

        secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata={"name": topo.secret, "namespace": args.namespace, "labels": topo.common_labels},
            type="Opaque",
            string_data=data,
            # After creation the password rotation (docs/runbooks/password-rotation.md) owns each
            # value: an update from here would put back passwords the cluster no longer accepts.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=ignored_secret_paths()),
        )
        self.secret_name = secret.metadata.apply(lambda m: m["name"])
        self.register_outputs({"secret_name": self.secret_name})
