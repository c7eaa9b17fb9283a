"""Stack settings: the seed's numbers as defaults, and every invalid input refused with a message
that names the key, the value and what is allowed, before any resource exists."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from components.settings import Settings, SettingsError, memory_bytes, settings_from_config
from smoke.local import render
from smoke.local.render import ROOT, run_program, stack_config

GiB = 2**30


def problems(config: dict[str, object]) -> str:
    with pytest.raises(SettingsError) as caught:
        settings_from_config(config, "test")
    return str(caught.value)


def test_defaults_are_the_seed_production_numbers_with_maxmemory_fixed() -> None:
    s = settings_from_config({}, "prod")
    assert s.namespace == "redis"
    assert s.image == "redis:7.2.4-alpine"
    assert (s.redis.replicas, s.sentinel.replicas, s.sentinel.quorum) == (3, 3, 2)
    assert s.sentinel.down_after_milliseconds == 5000
    assert s.sentinel.failover_timeout_milliseconds == 10000
    assert s.sentinel.parallel_syncs == 1
    assert s.redis.resources.limits.memory == "4Gi"
    assert s.redis.resources.requests.memory == "2Gi"
    assert s.redis.storage.size == "20Gi"
    assert s.redis.persistence.save_points == [(900, 1), (300, 10), (60, 10000)]
    assert s.redis.persistence.appendfsync == "everysec"
    assert s.redis.maxmemory_policy == "allkeys-lru"
    # The seed's 3gb in a 4Gi container is the defect; half the limit is the default.
    assert s.redis.maxmemory_bytes() == 2 * GiB


def test_both_stack_files_parse_and_dev_is_a_smaller_faster_copy() -> None:
    parsed = {}
    for stack in ("dev", "prod"):
        config, _, _ = stack_config(stack)
        parsed[stack] = settings_from_config(config, stack)
    dev, prod = parsed["dev"], parsed["prod"]
    assert dev.sentinel.down_after_milliseconds == 1000
    assert prod.sentinel.down_after_milliseconds == 5000
    assert memory_bytes(dev.redis.resources.limits.memory) < memory_bytes(prod.redis.resources.limits.memory)
    assert (dev.redis.replicas, dev.sentinel.replicas, dev.sentinel.quorum) == (3, 3, 2)
    assert dev.namespace != prod.namespace


def test_config_values_arrive_as_engine_strings_and_are_converted() -> None:
    s = settings_from_config(
        {"dict-redis:sentinel": json.dumps({"replicas": 5, "quorum": "3"}), "dict-redis:masterName": "cache"},
        "test",
    )
    assert (s.sentinel.replicas, s.sentinel.quorum, s.master_name) == (5, 3, "cache")


@pytest.mark.parametrize(
    ("sentinel", "expected"),
    [
        (
            {"replicas": 3, "quorum": 1},
            "dict-redis:sentinel.quorum = 1: must be a majority of the 3 Sentinels, between 2 and 3",
        ),
        (
            {"replicas": 3, "quorum": 4},
            "dict-redis:sentinel.quorum = 4: must be a majority of the 3 Sentinels, between 2 and 3",
        ),
        (
            {"replicas": 5, "quorum": 2},
            "dict-redis:sentinel.quorum = 2: must be a majority of the 5 Sentinels, between 3 and 5",
        ),
        ({"replicas": 4, "quorum": 3}, "dict-redis:sentinel.replicas = 4: use an odd number of at least 3 Sentinels"),
        ({"replicas": 1, "quorum": 1}, "dict-redis:sentinel.replicas = 1: use an odd number of at least 3 Sentinels"),
    ],
)
def test_sentinel_count_and_quorum_must_form_a_majority(sentinel: dict[str, int], expected: str) -> None:
    assert expected in problems({"sentinel": sentinel})


def test_maxmemory_above_sixty_percent_of_the_limit_is_refused_while_persistence_is_on() -> None:
    message = problems({"redis": {"maxmemory": "3Gi"}})
    assert "dict-redis:redis.maxmemory = '3Gi': is 75% of the memory limit 4Gi" in message
    assert "at most 60%" in message
    assert "dict-redis:redis.maxmemoryFraction = 0.7" in problems({"redis": {"maxmemoryFraction": 0.7}})


def test_maxmemory_may_use_more_of_the_limit_when_persistence_is_off() -> None:
    s = settings_from_config(
        {"redis": {"maxmemoryFraction": 0.8, "persistence": {"savePoints": [], "appendonly": False}}}, "test"
    )
    assert s.redis.maxmemory_bytes() == int(4 * GiB * 0.8)


def test_maxmemory_and_its_fraction_are_mutually_exclusive() -> None:
    assert "set only one of them" in problems({"redis": {"maxmemory": "1Gi", "maxmemoryFraction": 0.25}})


def test_unknown_keys_are_refused_with_the_valid_ones_listed() -> None:
    message = problems({"replicaCount": 3, "redis": {"resources": {"limit": {}}}})
    assert "dict-redis:replicaCount: unknown key; valid keys here:" in message
    assert "masterName" in message and "sentinel" in message
    assert "dict-redis:redis.resources.limit: unknown key; valid keys here: limits, requests" in message


def test_wrong_types_name_the_key_and_the_value() -> None:
    message = problems({"redis": {"replicas": "three"}, "sentinel": {"downAfterMilliseconds": [5000]}})
    assert "dict-redis:redis.replicas = 'three': Input should be a valid integer" in message
    assert "dict-redis:sentinel.downAfterMilliseconds = [5000]: Input should be a valid integer" in message


def test_an_object_key_that_is_not_json_is_refused() -> None:
    assert "dict-redis:redis = '{replicas: 3': not a valid object" in problems({"dict-redis:redis": "{replicas: 3"})


@pytest.mark.parametrize("image", ["redis", "redis:latest", "redis:7", "redis:7.2-alpine", "redis@sha256:abc"])
def test_images_must_be_pinned_to_a_full_version_or_digest(image: str) -> None:
    message = problems({"image": image})
    assert f"dict-redis:image = {image!r}: pin the image to a full version tag" in message


@pytest.mark.parametrize("image", ["redis:7.2.4-alpine", "registry.local:5000/redis:7.2.4", "redis@sha256:" + "a" * 64])
def test_pinned_images_are_accepted(image: str) -> None:
    assert settings_from_config({"image": image}, "test").image == image


def test_a_bad_password_is_refused_without_echoing_it() -> None:
    secret = "short pass"
    message = problems({"redisPassword": secret})
    assert "dict-redis:redisPassword: must be 16-128 characters" in message
    assert secret not in message
    assert "short" not in problems({"redisPassword": 12345678901234567890})


def test_requests_above_limits_and_malformed_quantities_are_refused() -> None:
    message = problems(
        {"redis": {"resources": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}}}}
    )
    assert "dict-redis:redis.resources.requests.cpu = '2': must not exceed limits.cpu '1'" in message
    message = problems(
        {
            "sentinel": {
                "resources": {"requests": {"cpu": "1", "memory": "3gb"}, "limits": {"cpu": "1", "memory": "4Gi"}}
            }
        }
    )
    assert "dict-redis:sentinel.resources.requests.memory = '3gb': '3gb' is not a memory quantity" in message


def test_the_grace_period_must_leave_time_for_the_prestop_failover() -> None:
    message = problems({"redis": {"terminationGracePeriodSeconds": 20}})
    assert "dict-redis:redis.terminationGracePeriodSeconds = 20: must be at least 22" in message
    assert "preStop handover may take 12 s" in message


def test_min_replicas_to_write_cannot_exceed_the_replicas() -> None:
    message = problems({"redis": {"replicas": 2, "minReplicasToWrite": 2}})
    assert "dict-redis:redis.minReplicasToWrite = 2: must be at most the number of replicas (1)" in message


def test_invalid_config_fails_before_any_resource_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[str] = []
    original = render.RecordingMocks.new_resource

    def spy(self: render.RecordingMocks, args: render.pulumi_mocks.MockResourceArgs) -> object:
        registered.append(args.name)
        return original(self, args)

    monkeypatch.setattr(render.RecordingMocks, "new_resource", spy)
    with pytest.raises(SettingsError, match=r"sentinel\.quorum = 1"):
        run_program("test", {"dict-redis:sentinel": json.dumps({"quorum": 1})})
    assert registered == []


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if name == "stack":
            continue
        key = prefix + (field.alias or name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_leaf_keys(annotation, key + "."))
        else:
            keys.append(key)
    return keys


def test_the_readme_documents_every_setting() -> None:
    # The settings reference moved from README.md to docs/settings.md (the README links it).
    readme = (ROOT / "docs" / "settings.md").read_text()
    keys = _leaf_keys(Settings)
    assert len(keys) > 40
    undocumented = []
    for key in keys:
        parent = key.rsplit(".", 1)[0]
        if f"`{key}`" in readme or f"`{parent}.*`" in readme:
            continue
        if key.endswith(".memory") and f"`{parent}.cpu` / `.memory`" in readme:
            continue
        undocumented.append(key)
    assert undocumented == []


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [("0 */6 * * *", 6 * 3600), ("30 1,13 * * *", 12 * 3600), ("@daily", 86400), ("0 2 * * 1-5", 3 * 86400)],
)
def test_backup_interval_is_the_longest_gap_of_the_schedule(schedule: str, seconds: int) -> None:
    settings = settings_from_config({"backup": {"schedule": schedule}}, "dev")
    assert settings.backup.interval_seconds() == seconds


def test_backup_missing_alert_follows_the_stack_schedule() -> None:
    from components.alerts import alert_rules

    settings = settings_from_config({"backup": {"schedule": "0 */12 * * *"}}, "dev")
    rule = next(r for r in alert_rules(settings) if r["alert"] == "RedisBackupMissing")
    assert "> 86400" in rule["expr"]  # twice 12 h
