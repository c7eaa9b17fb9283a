"""``make policy STACK=<stack>``: the policy pack run over the real program, without the Pulumi CLI.

The program runs under the mock runtime (``smoke.local.render.run_program``), every custom resource it
registers is captured, and the captured resources go to the pack's analyzer exactly as the engine
would send them during ``pulumi preview --policy-pack policies``: ``GetAnalyzerInfo``, then
``Configure`` (every policy's enforcement level and config, from ``policies/config/<stack>.json``
when it exists), one ``Analyze`` per resource (its inputs) and one ``AnalyzeStack`` (every
resource's outputs plus its id).

By default the analyzer is the real pack: ``python -u policies/__main__.py`` is started, its gRPC
port read from its first line, and it is stopped at the end. ``--in-process`` uses the SDK's
servicer class directly (the same code without the subprocess; the tests use it for speed).

Prints the violations grouped by policy and level, writes ``build/policy-<stack>.json``
(``{"policies": [...], "violations": [{"policy", "level", "resource", "message"}]}``) and exits 1
when any violation is mandatory, 2 on bad input (unknown stack, invalid stack file, stack config or
pack config, a report path that cannot be written), found before the program runs: the pack
config's values are checked against each policy's config schema (type, minimum, maximum) as the
engine checks them, with the pack run in-process for its schemas.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2 as proto
from pulumi.runtime.proto import analyzer_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PACK_DIR = ROOT / "policies"
CONFIG_DIR = PACK_DIR / "config"
LEVELS = {
    "advisory": proto.ADVISORY,
    "mandatory": proto.MANDATORY,
    "disabled": proto.DISABLED,
    "remediate": proto.REMEDIATE,
}
LEVEL_NAMES = {value: name for name, value in LEVELS.items()}
SERVER_START_SECONDS = 30


class PackConfigError(ValueError):
    """A pack config file that is not JSON, names an unknown policy, level or key, or gives a value
    its policy's config schema refuses."""


class Analyzer(Protocol):
    """The four calls of the Analyzer gRPC service that a preview makes (stub or servicer)."""

    def GetAnalyzerInfo(self, request: empty_pb2.Empty) -> proto.AnalyzerInfo: ...
    def Configure(self, request: proto.ConfigureAnalyzerRequest) -> empty_pb2.Empty: ...
    def Analyze(self, request: proto.AnalyzeRequest) -> proto.AnalyzeResponse: ...
    def AnalyzeStack(self, request: proto.AnalyzeStackRequest) -> proto.AnalyzeResponse: ...


class InProcessAnalyzer:
    """The SDK's servicer (``pulumi_policy.policy._PolicyAnalyzerServicer``, private: pinned with
    ``pulumi-policy==1.21.*``) called like a stub, i.e. without a gRPC context."""

    def __init__(self, name: str, policies: list[Any], enforcement_level: Any) -> None:
        from pulumi_policy.policy import _PolicyAnalyzerServicer

        self._servicer = _PolicyAnalyzerServicer(name, "0.0.1", policies, enforcement_level)

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._servicer, method)
        return lambda request: call(request, None)


def in_process_pack() -> InProcessAnalyzer:
    """The pack as ``__main__.py`` builds it, minus the server."""
    from pulumi_policy import EnforcementLevel

    from policies import pack

    return InProcessAnalyzer(pack.PACK_NAME, pack.POLICIES, EnforcementLevel.MANDATORY)


@contextmanager
def pack_server(python: str = sys.executable) -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """Start the real pack (``policies/__main__.py``) as the engine does and yield a stub for it."""
    process = subprocess.Popen(
        [python, "-u", str(PACK_DIR / "__main__.py")],
        cwd=PACK_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            process.kill()
            _, err = process.communicate(timeout=10)
            raise RuntimeError(f"the policy pack did not start (first line {line!r}):\n{err.strip()}")
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=SERVER_START_SECONDS)
        with channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- pack config --------------------------------------------------------------------------------


def load_pack_config(path: Path | None) -> dict[str, Any]:
    """A ``--policy-pack-config`` file: ``{"all"|<policy>: <level> | {"enforcementLevel": ..., <key>: ...}}``."""
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise PackConfigError(f"{path}: cannot read the pack config ({exc.strerror})") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise PackConfigError(f"{path} line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    except _DuplicateKey as exc:
        raise PackConfigError(
            f"{path}: key {exc.args[0]!r} is given twice in the same object; JSON readers keep only one of "
            "them: merge them into one"
        ) from None
    if not isinstance(data, dict):
        raise PackConfigError(f"{path}: must be a JSON object of policy names, not {type(data).__name__}")
    return data


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _schema_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why ``value`` does not fit a policy config property's JSON schema (the parts packs use:
    type, minimum, maximum, enum, array items), in words; None when it fits."""
    kind = schema.get("type")
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    described = {
        "number": "a number",
        "integer": "a whole number",
        "boolean": "true or false",
        "string": "a string",
        "array": "a list",
        "object": "an object",
    }.get(str(kind), str(kind))
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        described += f" from {_number(low)} to {_number(high)}"
    elif low is not None:
        described += f" of at least {_number(low)}"
    elif high is not None:
        described += f" of at most {_number(high)}"
    fits = {
        "number": is_number,
        "integer": is_number and float(value).is_integer(),
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }.get(str(kind), True)
    if fits and is_number and ((low is not None and value < low) or (high is not None and value > high)):
        fits = False
    if fits and "enum" in schema and value not in list(schema["enum"]):
        fits, described = False, "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if fits and kind == "array" and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            problem = _schema_problem(item, schema["items"])
            if problem:
                return f"item {index}: {problem}"
    if fits:
        return None
    about = f" ({schema['description']})" if schema.get("description") else ""
    return f"must be {described}{about}"


def configure_request(info: proto.AnalyzerInfo, pack_config: Mapping[str, Any]) -> proto.ConfigureAnalyzerRequest:
    """Every policy's level and properties, as the engine sends them after merging the config file
    over the pack's defaults (a policy left out would fall back to advisory in the SDK)."""
    known = {p.name: p for p in info.policies}
    unknown = sorted(set(pack_config) - set(known) - {"all"})
    if unknown:
        raise PackConfigError(f"unknown policy {', '.join(unknown)}; policies: {', '.join(sorted(known))}")

    def split(value: Any, where: str) -> tuple[int | None, dict[str, Any]]:
        if isinstance(value, str):
            value = {"enforcementLevel": value}
        if not isinstance(value, dict):
            raise PackConfigError(f"{where}: expected a level or an object, got {value!r}")
        props = dict(value)
        level = props.pop("enforcementLevel", None)
        if level is not None and level not in LEVELS:
            raise PackConfigError(f"{where}.enforcementLevel = {level!r}: use one of {', '.join(LEVELS)}")
        return (LEVELS[level] if level is not None else None), props

    all_level, _ = split(pack_config.get("all", {}), "all")
    request = proto.ConfigureAnalyzerRequest()
    for name, policy in known.items():
        level, props = split(pack_config.get(name, {}), name)
        unknown_keys = sorted(set(props) - set(policy.configSchema.properties))
        if unknown_keys:
            valid = ", ".join(sorted(policy.configSchema.properties)) or "none"
            raise PackConfigError(f"{name}: unknown config {', '.join(unknown_keys)}; valid keys: {valid}")
        for key, value in props.items():
            problem = _schema_problem(value, json_format.MessageToDict(policy.configSchema.properties[key]))
            if problem:
                raise PackConfigError(f"{name}.{key} = {json.dumps(value)}: {problem}")
        defaults = {k: v["default"] for k, v in policy.configSchema.properties.items() if "default" in v}
        config = proto.PolicyConfig(
            enforcementLevel=level
            if level is not None
            else all_level
            if all_level is not None
            else policy.enforcementLevel
        )
        config.properties.update({**defaults, **props})
        request.policyConfig[name].CopyFrom(config)
    return request


# --- requests -----------------------------------------------------------------------------------


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def analyzed(resources: Iterable[Any]) -> list[Any]:
    """The resources a preview sends to analyzers: custom resources, not providers or components."""
    return [r for r in resources if r.custom and not r.type.startswith("pulumi:providers:")]


def analyze_requests(resources: Iterable[Any]) -> list[proto.AnalyzeRequest]:
    return [proto.AnalyzeRequest(type=r.type, name=r.name, urn=r.urn, properties=_struct(r.inputs)) for r in resources]


def analyze_stack_request(resources: Iterable[Any]) -> proto.AnalyzeStackRequest:
    return proto.AnalyzeStackRequest(
        resources=[
            proto.AnalyzerResource(
                type=r.type, name=r.name, urn=r.urn, properties=_struct({**(r.outputs or r.inputs), "id": r.id})
            )
            for r in resources
        ]
    )


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str
    resource: str
    message: str


def run_analyzer(
    analyzer: Analyzer, resources: list[Any], pack_config: Mapping[str, Any]
) -> tuple[list[str], list[Violation]]:
    """The calls a preview makes; returns the pack's policy names and every diagnostic."""
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    analyzer.Configure(configure_request(info, pack_config))
    responses = [analyzer.Analyze(request) for request in analyze_requests(resources)]
    responses.append(analyzer.AnalyzeStack(analyze_stack_request(resources)))
    violations = []
    for response, resource in zip(responses, [*resources, None], strict=True):
        for d in response.diagnostics:
            urn = d.urn or (resource.urn if resource is not None else "")
            # The SDK prefixes the policy's description; the message proper follows it.
            message = d.message.removeprefix(d.description + "\n") if d.description else d.message
            level = LEVEL_NAMES.get(d.enforcementLevel, "advisory")
            violations.append(Violation(d.policyName, level, urn or "stack", message))
    return [p.name for p in info.policies], violations


# --- output -------------------------------------------------------------------------------------


def print_report(stack: str, violations: list[Violation], policies: list[str], out: Path) -> None:
    order = {"mandatory": 0, "remediate": 1, "advisory": 2}
    groups: dict[tuple[str, str], list[Violation]] = {}
    for v in sorted(violations, key=lambda v: (order.get(v.level, 3), v.policy)):
        groups.setdefault((v.level, v.policy), []).append(v)
    for (level, policy), items in groups.items():
        print(f"[{level}] {policy} ({len(items)})")
        for v in items:
            for i, line in enumerate(v.message.splitlines()):
                print(f"    {'- ' if i == 0 else '  '}{line}")
    mandatory = sum(1 for v in violations if v.level == "mandatory")
    print(
        f"stack {stack}: {len(policies)} policies, {mandatory} mandatory and "
        f"{len(violations) - mandatory} advisory violations; report: {out}"
    )


def main(argv: list[str] | None = None) -> int:
    from components.settings import SettingsError
    from smoke.cli import HelpWithDefaults, add_stack_arguments, stack_of, unwritable
    from smoke.local.render import run_program, stack_config

    parser = argparse.ArgumentParser(
        prog="python -m policies.analyze", description=__doc__.split("\n\n")[0], formatter_class=HelpWithDefaults
    )
    add_stack_arguments(parser)
    parser.add_argument(
        "--config", type=Path, help="pack config JSON (default: policies/config/<stack>.json if it exists)"
    )
    parser.add_argument("--out", type=Path, help="report path (default: build/policy-<stack>.json)")
    parser.add_argument("--in-process", action="store_true", help="call the analyzer in-process instead of over gRPC")
    args = parser.parse_args(argv)
    stack = stack_of(args)

    config_path = args.config or (CONFIG_DIR / f"{stack}.json")
    if args.config is None and not config_path.exists():
        config_path = None
    out = args.out or ROOT / "build" / f"policy-{stack}.json"

    def failed(message: object) -> int:
        print(f"policy check of stack {stack} failed: {message}", file=sys.stderr)
        return 2

    try:
        pack_config = load_pack_config(config_path)
    except PackConfigError as exc:
        return failed(exc)
    try:
        # The engine checks the pack config against the policies' schemas before it runs anything.
        configure_request(in_process_pack().GetAnalyzerInfo(empty_pb2.Empty()), pack_config)
    except PackConfigError as exc:
        return failed(f"{config_path}: {exc}")
    try:
        config, _, skipped = stack_config(stack, path=args.stack_file)
    except SettingsError as exc:
        return failed(exc)
    problem = unwritable(out)
    if problem:
        return failed(f"--out {out}: {problem}")
    for key in skipped:
        print(f"note: {key} is encrypted in the stack file; analysing without it", file=sys.stderr)
    no_pack_config = (
        f"stack {stack} has no pack config ({(CONFIG_DIR / f'{stack}.json').relative_to(ROOT)} does not exist): "
        "every policy runs at the pack's default level, most of them mandatory; give one with --config FILE"
    )
    if config_path is None:
        print(f"note: {no_pack_config}", file=sys.stderr)
    try:
        rendered = run_program(stack, config)
    except SettingsError as exc:
        return failed(exc)

    resources = analyzed(rendered.resources)
    started = time.monotonic()
    try:
        if args.in_process:
            policies, violations = run_analyzer(in_process_pack(), resources, pack_config)
        else:
            with pack_server() as stub:
                policies, violations = run_analyzer(stub, resources, pack_config)
    except PackConfigError as exc:
        return failed(f"{config_path}: {exc}")
    elapsed = time.monotonic() - started

    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"policies": policies, "violations": [v.__dict__ for v in violations]}
    out.write_text(json.dumps(body, indent=2) + "\n")
    print(
        f"analysed {len(resources)} resources of stack {stack} in {elapsed:.2f} s"
        f"{f' with {config_path.relative_to(ROOT)}' if config_path and config_path.is_relative_to(ROOT) else ''}"
    )
    print_report(stack, violations, policies, out)
    mandatory = any(v.level == "mandatory" for v in violations)
    if mandatory and config_path is None:
        print(f"note: {no_pack_config}")
    return 1 if mandatory else 0


if __name__ == "__main__":
    sys.exit(main())
