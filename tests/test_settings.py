"""Stack settings: the seed's numbers as defaults, and every invalid input refused with a message
that names the key, the value and what is allowed, before any resource exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from components.settings import (
    DOWN_AFTER_FLOOR_MS,
    PATTERN_RULES,
    Settings,
    SettingsError,
    StackFileError,
    config_key_problems,
    memory_bytes,
    read_stack_file,
    settings_from_config,
)
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
    assert s.image == "valkey/valkey:8.0.1-alpine"
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
    assert dev.sentinel.down_after_milliseconds == DOWN_AFTER_FLOOR_MS == 1500
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


@pytest.mark.parametrize("down_after", [100, 1000, DOWN_AFTER_FLOOR_MS - 1])
def test_a_down_after_that_would_fail_a_new_master_over_again_is_refused_saying_why(down_after: int) -> None:
    """Sentinel first asks a new master up to 1.1 s after a failover; below the floor a healthy new
    master is seen down and failed over again (the rehearsal did so at 1000 ms)."""
    message = problems({"sentinel": {"downAfterMilliseconds": down_after}})
    assert f"dict-redis:sentinel.downAfterMilliseconds = {down_after}: must be" in message
    assert f"at least {DOWN_AFTER_FLOOR_MS}" in message and "fails it over again" in message
    s = settings_from_config({"sentinel": {"downAfterMilliseconds": DOWN_AFTER_FLOOR_MS}}, "test")
    assert s.sentinel.down_after_milliseconds == DOWN_AFTER_FLOOR_MS


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


def test_the_state_tier_defaults_never_evict_keep_an_aof_and_are_sized_small() -> None:
    s = settings_from_config({}, "prod")
    assert (s.state.master_name, s.state.maxmemory_policy) == ("dictstate", "noeviction")
    assert s.state.persistence.appendonly and s.state.persistence.appendfsync == "everysec"
    assert s.state.maxmemory_bytes() == GiB // 2 < s.redis.maxmemory_bytes()


def test_a_state_tier_that_could_evict_or_forget_is_refused_naming_the_key() -> None:
    message = problems({"state": {"maxmemoryPolicy": "allkeys-lru"}})
    assert "dict-redis:state.maxmemoryPolicy = 'allkeys-lru': must be 'noeviction'" in message
    assert "an evicted decision is a payment executed twice" in message
    message = problems({"state": {"persistence": {"appendonly": False}}})
    assert "dict-redis:state.persistence.appendonly = false: must be true" in message
    message = problems({"state": {"persistence": {"appendfsync": "no"}}})
    assert "dict-redis:state.persistence.appendfsync = 'no': must be 'everysec' (the default) or 'always'" in message
    assert "must differ from masterName" in problems({"state": {"masterName": "mymaster"}})


def test_the_state_tier_maxmemory_must_leave_the_persistence_headroom_under_its_limit() -> None:
    message = problems({"state": {"maxmemory": "900Mi"}})
    assert "dict-redis:state.maxmemory = '900Mi': is 88% of the memory limit 1Gi" in message
    assert "at most 60%" in message
    assert "dict-redis:state.maxmemory = '0'" in problems({"state": {"maxmemory": "0"}})
    message = problems({"state": {"resources": {"limits": {"memory": "64Mi"}}}})
    assert "dict-redis:state.resources.requests.memory = '512Mi' (the default: set it too)" in message


def test_maxmemory_and_its_fraction_are_mutually_exclusive() -> None:
    assert "set only one of them" in problems({"redis": {"maxmemory": "1Gi", "maxmemoryFraction": 0.25}})


def test_unknown_keys_are_refused_with_the_valid_ones_listed() -> None:
    message = problems({"replicaCount": 3, "redis": {"resources": {"limit": {}}}})
    assert "dict-redis:replicaCount: unknown key; valid keys here:" in message
    assert "masterName" in message and "sentinel" in message
    assert "dict-redis:redis.resources.limit: unknown key; valid keys here: limits, requests" in message


def test_wrong_types_name_the_key_the_value_and_the_rule_with_its_limits() -> None:
    message = problems({"redis": {"replicas": "three"}, "sentinel": {"downAfterMilliseconds": [5000]}})
    assert "dict-redis:redis.replicas = 'three': must be a whole number from 2 to 9" in message
    assert (
        "dict-redis:sentinel.downAfterMilliseconds = [5000]: must be a whole number of milliseconds of at least 1500"
        in (message)
    )
    assert "Input should be" not in message


def test_an_object_key_that_is_not_an_object_says_so_in_yaml_terms() -> None:
    message = problems({"dict-redis:redis": "{replicas: 3", "dict-redis:tls": "string"})
    assert "dict-redis:redis = '{replicas: 3': must be a block of keys (antiAffinity, " in message
    assert "dict-redis:tls = 'string': must be a block of keys (caDurationHours, " in message
    assert "not a single value" in message and "Expecting value" not in message


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


# --- bad input: every problem at once, in words ------------------------------------------------


def _schema_patterns(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in _schema_patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _schema_patterns(value)]
    return []


def test_every_pattern_of_the_settings_has_its_rule_in_words() -> None:
    patterns = set(_schema_patterns(Settings.model_json_schema()))
    assert len(patterns) >= 8
    assert patterns <= {regex for regex, _ in PATTERN_RULES}
    assert all(rule and "^" not in rule and "$" not in rule for _, rule in PATTERN_RULES)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"namespace": "Redis_Dev"}, "dict-redis:namespace = 'Redis_Dev': must be a DNS label: 1-63 lowercase"),
        ({"masterName": "my master"}, "dict-redis:masterName = 'my master': must be 1-64 letters, digits"),
        ({"clientNamespaces": ["ok", "Not_OK"]}, "dict-redis:clientNamespaces[1] = 'Not_OK': must be a DNS label"),
        ({"backup": {"region": "Brazil"}}, "dict-redis:backup.region = 'Brazil': must be an AWS region name"),
        ({"backup": {"oidcProviderArn": "arn:x"}}, "dict-redis:backup.oidcProviderArn = 'arn:x': must be an IAM OIDC"),
        ({"monitoring": {"scrapeInterval": "30 s"}}, "monitoring.scrapeInterval = '30 s': not a Prometheus duration"),
        ({"tls": {"issuerName": "CA!"}}, "dict-redis:tls.issuerName = 'CA!': must be a cert-manager issuer name"),
        ({"smoke": {"runId": "Run 1"}}, "dict-redis:smoke.runId = 'Run 1': must be up to 20 lowercase letters"),
    ],
)
def test_pattern_errors_say_the_rule_in_words_not_the_expression(config: dict[str, object], expected: str) -> None:
    message = problems(config)
    assert expected in message
    assert "^" not in message and "String should match" not in message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"redis": {"storage": {"size": "0"}}}, "dict-redis:redis.storage.size = '0': '0' is no memory at all"),
        ({"redis": {"storage": {"className": ""}}}, "dict-redis:redis.storage.className = '': must be a StorageClass"),
        ({"redis": {"resources": {"limits": {"cpu": "0"}}}}, "redis.resources.limits.cpu = '0': '0' is no CPU"),
        ({"monitoring": {"scrapeInterval": "0s"}}, "dict-redis:monitoring.scrapeInterval = '0s': is no time at all"),
        ({"masterName": None}, "dict-redis:masterName = (empty): must be 1-64 letters"),
        ({"masterName": ""}, "leave the key out for the default 'mymaster'"),
        ({"redis": {"replicas": None}}, "dict-redis:redis.replicas = null: empty; must be a whole number from 2 to 9"),
        ({"clientSelector": {"team": True}}, "dict-redis:clientSelector.team = true: must be text: quote it"),
        ({"image": '["redis"]'}, 'dict-redis:image = ["redis"]: must be text, not a list'),
        ({"stack": "prod"}, "dict-redis:stack: unknown key"),
    ],
)
def test_empty_zero_and_wrongly_shaped_values_are_refused(config: dict[str, object], expected: str) -> None:
    assert expected in problems(config)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a..b", "has two adjacent periods"),
        ("192.168.1.10", "is formatted as an IP address"),
        ("Bad_Bucket", "has characters other than lowercase letters"),
        ("ab", "is 2 characters long"),
        ("x" * 64, "is 64 characters long"),
        ("-bucket", "does not start and end with a letter or digit"),
        ("xn--bucket", "starts with a prefix S3 reserves"),
        ("bucket-s3alias", "ends with a suffix S3 reserves"),
    ],
)
def test_bucket_names_s3_refuses_are_refused_with_the_reason(name: str, why: str) -> None:
    message = problems({"backup": {"bucketName": name}})
    assert f"dict-redis:backup.bucketName = {name!r}: {why}" in message
    assert "; must be an S3 bucket name: 3-63 lowercase letters, digits, '.' or '-'" in message


def test_a_backup_schedule_closer_than_an_hour_is_refused() -> None:
    backup = {
        "enabled": True,
        "bucketName": "b-ok",
        "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/x",
        "schedule": "* * * * *",
    }
    message = problems({"backup": backup})
    assert (
        "dict-redis:backup.schedule = '* * * * *': runs only 1 min apart; backups must be at least 1 h apart" in message
    )
    assert "at least 1 h" in problems({"backup": {**backup, "schedule": "*/30 * * * *"}})
    hourly = settings_from_config({"backup": {**backup, "schedule": "0 * * * *"}}, "test")
    assert hourly.backup.shortest_gap_seconds() == 3600
    # A schedule whose first gap lies beyond the four weeks it looks at still has an interval.
    yearly = settings_from_config({"backup": {**backup, "schedule": "@yearly"}}, "test")
    assert yearly.backup.interval_seconds() >= 365 * 86400


def test_a_partial_block_is_merged_with_the_defaults() -> None:
    s = settings_from_config(
        {
            "redis": {"resources": {"limits": {"memory": "8Gi"}}, "probes": {"liveness": {"periodSeconds": 20}}},
            "sentinel": {"resources": {"requests": {"cpu": "150m"}}},
        },
        "test",
    )
    assert (s.redis.resources.limits.memory, s.redis.resources.limits.cpu) == ("8Gi", "1000m")
    assert s.redis.resources.requests.memory == "2Gi"
    assert (s.redis.probes.liveness.period_seconds, s.redis.probes.liveness.failure_threshold) == (20, 3)
    assert s.redis.probes.startup.failure_threshold == 60
    assert (s.sentinel.resources.requests.cpu, s.sentinel.resources.limits.cpu) == ("150m", "200m")
    # A default that no longer fits what was set is named as a default.
    message = problems({"redis": {"resources": {"limits": {"memory": "1Gi"}}}})
    assert "redis.resources.requests.memory = '2Gi' (the default: set it too): must not exceed limits.memory" in message


def test_a_type_error_does_not_hide_the_checks_across_other_keys() -> None:
    message = problems({"redis": {"replicas": "three", "maxmemoryFraction": 0.9}, "sentinel": {"quorum": 1}})
    assert "dict-redis:redis.replicas = 'three': must be a whole number from 2 to 9" in message
    assert "dict-redis:redis.maxmemoryFraction = 0.9: is 90% of the memory limit" in message
    assert "dict-redis:sentinel.quorum = 1: must be a majority" in message
    # A check that reads the wrong key is left out: its verdict would be about the default.
    message = problems({"sentinel": {"replicas": "x", "quorum": 9}})
    assert "sentinel.replicas = 'x'" in message and "sentinel.quorum" not in message


def test_a_dotted_key_from_the_docs_says_where_it_belongs() -> None:
    message = problems({"dict-redis:redis.replicas": "5"})
    assert "dict-redis:redis.replicas: unknown key; valid keys here: backup," in message
    assert "a dotted name as in docs/settings.md is a path into a block: write replicas: 5 under dict-redis:redis:" in (
        message
    )
    assert "write resources: {limits: {memory: 8Gi}} under dict-redis:redis:" in problems(
        {"redis.resources.limits.memory": "8Gi"}
    )
    assert "(did you mean enabled?)" in problems({"monitoring": {"enable": True}})


def test_keys_outside_the_project_namespace_are_refused() -> None:
    found = config_key_problems(
        {
            "dict-rediss:namespace": "redis-dev",
            "namespace": "redis-dev",
            "aws:region": "us-east-1",
            "dict-redis:image": "redis:7.2.4-alpine",
            "pulumi:tags": "{}",
            "kubernetes:context": "dev",
            "dict-redis-x:redisPassword": "not-shown-anywhere-1234",
        }
    )
    text = "\n".join(found)
    assert len(found) == 4, text
    assert "dict-rediss:namespace = 'redis-dev': unknown config namespace 'dict-rediss' (did you mean " in text
    assert "dict-redis:namespace?)" in text
    assert "namespace = 'redis-dev': a key without a namespace; stack config keys are written dict-redis:<key>" in text
    assert "aws:region = 'us-east-1': unknown config namespace 'aws'" in text
    assert "not-shown-anywhere-1234" not in text and "(value not shown: it is a secret)" in text


def test_keys_outside_the_namespace_fail_the_program_with_every_other_problem() -> None:
    with pytest.raises(SettingsError) as caught:
        run_program("test", {"dict-rediss:namespace": "redis-dev", "dict-redis:sentinel": json.dumps({"quorum": 1})})
    assert len(caught.value.problems) == 2
    assert "unknown config namespace 'dict-rediss'" in caught.value.problems[0]
    assert "sentinel.quorum = 1" in caught.value.problems[1]


def test_a_stack_file_with_a_duplicate_key_or_bad_yaml_is_one_line(tmp_path: Path) -> None:
    duplicate = tmp_path / "Pulumi.dup.yaml"
    duplicate.write_text("config:\n  dict-redis:redis:\n    replicas: 3\n    replicas: 5\n")
    with pytest.raises(StackFileError) as caught:
        read_stack_file(duplicate)
    assert str(caught.value) == (
        f"unusable stack file: {duplicate} line 4: key 'replicas' is given twice in the same block (first on line 3);"
        " YAML would silently keep only the second: merge them into one"
    )
    # An anchor merged into a block and overridden there is not a duplicate.
    merged = tmp_path / "Pulumi.merge.yaml"
    merged.write_text("base: &b {replicas: 3}\nconfig:\n  dict-redis:redis:\n    <<: *b\n    replicas: 5\n")
    assert read_stack_file(merged) == {"dict-redis:redis": {"replicas": 5}}
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text("config:\n  dict-redis:redis: {replicas: 3\n")
    with pytest.raises(StackFileError, match=r"Pulumi\.broken\.yaml line 3, column 1: not valid YAML: "):
        read_stack_file(broken)
