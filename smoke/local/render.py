"""Offline render: the real Pulumi program under the mock runtime, no CLI, no cluster.

``python -m smoke.local.render --stack dev`` runs ``__main__.py`` with the stack's config from
``Pulumi.<stack>.yaml`` (or the stack file ``--stack-file PATH`` names), records every resource it
registers (exactly the inputs Pulumi would send), and writes

    build/render/<stack>/k8s/<kind>-<name>.yaml   one Kubernetes object per file
    build/render/<stack>/aws/<type>-<name>.json   every other resource: type, name, inputs
    build/render/<stack>/outputs.json             the stack outputs
    build/render/<stack>/prometheus/<name>-rules.yaml   each PrometheusRule's groups as a plain
                                                  rules file (``promtool check rules`` reads it)
    build/render/<stack>/grafana/<file>.json      each dashboard a labelled ConfigMap carries

Secret values are written as ``<redacted>``. ``REDIS_PASSWORD`` in the environment becomes the
stack's ``redisPassword`` (a test uses it to prove the password reaches no rendered file).

Bad input stops it before anything is written, with one line per problem and exit code 2: a stack
file that is not YAML, has a key twice or has the wrong shape, config that is invalid (see
components/settings.py), or an ``--out`` that cannot be written.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import runpy
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config

from components.settings import PROJECT, SettingsError, StackFileError, read_stack_file
from smoke.cli import HelpWithDefaults, add_stack_arguments, stack_of, unwritable

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "__main__.py"
REDACTED = "<redacted>"
# How the mock runtime marks a secret value (pulumi.runtime.rpc's secret signature).
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"


@dataclass(frozen=True)
class Registered:
    """One resource the program registered: what ``pulumi preview`` would show for it."""

    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    urn: str = ""
    # What the mock returned for it (its "state" after a deploy): the policy runner's stack view.
    id: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    # The ``ignore_changes`` option as the engine receives it (property paths).
    ignore_changes: tuple[str, ...] = ()

    @property
    def is_kubernetes(self) -> bool:
        return self.type.startswith("kubernetes:")

    @property
    def parent_type(self) -> str | None:
        """The parent's type token, read from the URN (``...::parentType$childType::name``)."""
        qualified = self.urn.split("::")[2] if self.urn.count("::") >= 3 else ""
        parent = qualified.rsplit("$", 1)[0] if "$" in qualified else None
        return None if parent == "pulumi:pulumi:Stack" else parent


@dataclass
class Rendered:
    stack: str
    resources: list[Registered] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    generated_secrets: list[str] = field(default_factory=list)

    def kubernetes(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Kubernetes manifests (redacted, plain numbers), optionally of one kind."""
        docs = [manifest(r) for r in self.resources if r.is_kubernetes and r.custom]
        return [d for d in docs if kind is None or d.get("kind") == kind]

    def find(self, kind: str, name: str) -> dict[str, Any]:
        for doc in self.kubernetes(kind):
            if doc["metadata"]["name"] == name:
                return doc
        raise KeyError(f"no {kind} named {name!r} in the {self.stack} render")


# pulumi-tls resource type -> (output it computes, PEM label of the stand-in the mock returns).
_TLS_PEM_OUTPUTS = {
    "tls:index/privateKey:PrivateKey": ("privateKeyPem", "PRIVATE KEY"),
    "tls:index/certRequest:CertRequest": ("certRequestPem", "CERTIFICATE REQUEST"),
    "tls:index/selfSignedCert:SelfSignedCert": ("certPem", "CERTIFICATE"),
    "tls:index/locallySignedCert:LocallySignedCert": ("certPem", "CERTIFICATE"),
}


def _fake_pem(label: str) -> str:
    """A random body in PEM armour: unique per call, so a leak test can search for it."""
    body = base64.b64encode(secrets.token_bytes(96)).decode()
    return f"-----BEGIN {label}-----\n{body[:64]}\n{body[64:]}\n-----END {label}-----\n"


class RecordingMocks(pulumi_mocks.Mocks):
    """Echoes inputs as outputs and fakes what a provider would compute."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any], bool]] = []
        # Values the mock made up for secret outputs, so tests can prove they leak nowhere.
        self.generated_secrets: list[str] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = secrets.token_urlsafe(30)
            self.generated_secrets.append(outputs["result"])
        if args.typ in _TLS_PEM_OUTPUTS:
            # pulumi-tls computes these; stand-ins shaped like PEM so the stack-ca Secrets have values.
            wire_name, label = _TLS_PEM_OUTPUTS[args.typ]
            outputs[wire_name] = _fake_pem(label)
            if label == "PRIVATE KEY":
                self.generated_secrets.append(outputs[wire_name])
        if args.typ.startswith("aws:") and "arn" not in outputs:
            # Computed by AWS; a stand-in so policies that reference an ARN render with a value.
            outputs["arn"] = f"arn:aws:mock:::{args.name}"
        self.records.append((args.typ, args.name, dict(args.inputs), bool(args.custom)))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi_mocks.MockCallArgs) -> dict[str, Any]:
        return {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, also keeping each resource's ``ignoreChanges`` (its mocks never see options)."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.ignore_changes: dict[str, tuple[str, ...]] = {}

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method it overrides
        response = super().RegisterResource(request)
        self.ignore_changes[response.urn] = tuple(request.ignoreChanges)
        return response


STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def stack_names() -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def stack_file(stack: str) -> Path:
    """``Pulumi.<stack>.yaml`` of this project, or :class:`StackFileError` naming the stacks there are."""
    path = ROOT / f"Pulumi.{stack}.yaml"
    if not STACK_NAME.match(stack) or not path.is_file():
        shown = path.name if STACK_NAME.match(stack) else "such stack file"
        raise StackFileError([f"unknown stack {stack!r}: no {shown}; stacks: {', '.join(stack_names())}"])
    return path


def stack_config(
    stack: str, password: str | None = None, path: Path | None = None
) -> tuple[dict[str, str], list[str], list[str]]:
    """``Pulumi.<stack>.yaml`` (or the stack file at ``path``) as the engine hands it to a program:
    strings, objects as JSON, an empty value as an empty string.

    Encrypted (``secure:``) values cannot be read without the stack's passphrase; they are left
    out and named in the third element so the caller can say so. One outside this project's
    namespace is passed on (as an empty secret) for the program to refuse, as the engine would.
    Raises :class:`StackFileError` for a file that cannot be read as stack config.
    """
    path = stack_file(stack) if path is None else path
    shown = path.name if path.parent == ROOT else str(path)
    raw = read_stack_file(path, shown)
    config: dict[str, str] = {}
    skipped: list[str] = []
    secret_keys: list[str] = []
    for raw_key, value in raw.items():
        key = str(raw_key)
        if isinstance(value, dict) and set(value) == {"secure"}:
            if key.startswith(f"{PROJECT}:"):
                skipped.append(key)
            else:
                config[key] = ""
                secret_keys.append(key)
        elif value is None:
            config[key] = ""
        elif isinstance(value, (dict, list)):
            config[key] = json.dumps(value, default=str)  # YAML dates and the like as text
        elif isinstance(value, bool):
            config[key] = "true" if value else "false"
        else:
            config[key] = str(value)
    if password is not None:
        config[f"{PROJECT}:redisPassword"] = password
        secret_keys.append(f"{PROJECT}:redisPassword")
    return config, secret_keys, skipped


def _close_current_loop() -> None:
    """Close the thread's event loop if one is set: the Pulumi runtime creates one on demand
    (``_ensure_event_loop``), and an unclosed loop dropped later fails noisily in ``__del__``."""
    try:
        current = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    if not current.is_running() and not current.is_closed():
        current.close()


def run_program(stack: str, config: dict[str, str], secret_keys: list[str] | None = None) -> Rendered:
    """Run ``__main__.py`` once under fresh mocks and return everything it registered."""
    _close_current_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    recorder = RecordingMocks()
    rendered = Rendered(stack)
    set_all_config(config, secret_keys or [])
    pulumi_settings.reset_options()
    monitor = RecordingMonitor(recorder)
    pulumi_mocks.set_mocks(recorder, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    sys.path.insert(0, str(ROOT))

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        runpy.run_path(str(PROGRAM), run_name="__main__")
        root = pulumi_settings.get_root_resource()
        exports = dict(getattr(root, "outputs", {}) or {})
        return pulumi.Output.all(**exports).apply(rendered.outputs.update)

    try:
        program()
    finally:
        sys.path.remove(str(ROOT))
        set_all_config({}, [])
        pulumi_settings.reset_options()
        _close_current_loop()
        loop.close()
        asyncio.set_event_loop(None)

    # URN: urn:pulumi:<stack>::<project>::<parent types $ ...>$<type>::<name>
    urns = {
        (urn.split("::")[2].rsplit("$", 1)[-1], urn.rsplit("::", 1)[-1]): urn
        for urn in monitor.get_registered_resources()
    }
    registrations = monitor.get_registered_resources()
    rendered.generated_secrets = list(recorder.generated_secrets)
    rendered.resources = []
    for typ, name, inputs, custom in recorder.records:
        urn = urns.get((typ, name), "")
        registration = registrations.get(urn)
        state = dict(registration.state or {}) if registration else {}
        rendered.resources.append(
            Registered(
                typ,
                name,
                inputs,
                custom,
                urn,
                registration.id if registration else "",
                state,
                monitor.ignore_changes.get(urn, ()),
            )
        )
    return rendered


# --- turning inputs into files ------------------------------------------------------------------


def _redact(value: Any) -> Any:
    """Keep a secret's shape (its keys), replace every value in it."""
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return REDACTED


def _plain(value: Any) -> Any:
    """Redact secrets (keeping their keys) and turn protobuf floats (3.0) back into ints."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            return _redact(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_HEAD = ("apiVersion", "kind", "metadata")


def manifest(resource: Registered) -> dict[str, Any]:
    """The object as Pulumi would send it, keys in the usual order, every Secret value redacted."""
    doc = _plain(resource.inputs)
    if doc.get("kind") == "Secret":
        for key in ("data", "stringData"):
            if key in doc:
                doc[key] = _redact(doc[key])
    return {**{k: doc[k] for k in _HEAD if k in doc}, **{k: v for k, v in doc.items() if k not in _HEAD}}


class _ManifestDumper(yaml.SafeDumper):
    """Writes multi-line strings (configs, scripts) as readable literal blocks."""


def _str_representer(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_ManifestDumper.add_representer(str, _str_representer)


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_ManifestDumper, sort_keys=False, width=120)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def _write_monitoring_files(doc: dict[str, Any], out_dir: Path) -> None:
    """The PrometheusRule's spec as the plain rules file, and dashboards as JSON files: the same
    data as in the manifests, in the form promtool and Grafana read."""
    name = doc["metadata"]["name"]
    if doc["kind"] == "PrometheusRule":
        (out_dir / "prometheus").mkdir(exist_ok=True)
        (out_dir / "prometheus" / f"{_slug(name)}-rules.yaml").write_text(to_yaml(doc["spec"]))
    elif doc["kind"] == "ConfigMap" and any(key.endswith(".json") for key in doc.get("data", {})):
        (out_dir / "grafana").mkdir(exist_ok=True)
        for file_name, text in doc.get("data", {}).items():
            if file_name.endswith(".json"):
                (out_dir / "grafana" / _slug(file_name)).write_text(text)


def write_render(rendered: Rendered, out_dir: Path) -> list[tuple[str, str, Path]]:
    """Write the render under ``out_dir`` (replacing an older one); return (kind, name, path) rows."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "k8s").mkdir(parents=True)
    (out_dir / "aws").mkdir(parents=True)
    rows: list[tuple[str, str, Path]] = []
    for resource in sorted(rendered.resources, key=lambda r: (not r.is_kubernetes, r.type, r.name)):
        if not resource.custom:
            continue
        if resource.is_kubernetes:
            doc = manifest(resource)
            path = out_dir / "k8s" / f"{_slug(doc['kind'])}-{_slug(doc['metadata']['name'])}.yaml"
            path.write_text(to_yaml(doc))
            rows.append((doc["kind"], doc["metadata"]["name"], path))
            _write_monitoring_files(doc, out_dir)
        else:
            path = out_dir / "aws" / f"{_slug(resource.type.split(':')[-1])}-{_slug(resource.name)}.json"
            body = {"type": resource.type, "name": resource.name, "inputs": _plain(resource.inputs)}
            path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
            rows.append((resource.type.split(":")[-1], resource.name, path))
    (out_dir / "outputs.json").write_text(json.dumps(_plain(rendered.outputs), indent=2, sort_keys=True) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smoke.local.render", description=__doc__.split("\n\n")[0], formatter_class=HelpWithDefaults
    )
    add_stack_arguments(parser)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "render", help="output root: writes <out>/<stack>/"
    )
    args = parser.parse_args(argv)
    stack = stack_of(args)

    out_dir = args.out / stack
    try:
        config, secret_keys, skipped = stack_config(stack, os.environ.get("REDIS_PASSWORD") or None, args.stack_file)
        problem = unwritable(out_dir, directory=True)
        if problem:
            print(f"render of stack {stack} failed: --out {args.out}: {problem}", file=sys.stderr)
            return 2
        for key in skipped:
            print(f"note: {key} is encrypted in the stack file; rendering without it", file=sys.stderr)
        rendered = run_program(stack, config, secret_keys)
    except SettingsError as exc:
        print(f"render of stack {stack} failed: {exc}", file=sys.stderr)
        return 2
    rows = write_render(rendered, out_dir)

    width = max(len(kind) for kind, _, _ in rows)
    shown = out_dir.relative_to(Path.cwd()) if out_dir.is_relative_to(Path.cwd()) else out_dir
    print(f"Rendered stack {stack} to {shown}:")
    for kind, name, path in rows:
        print(f"  {kind:<{width}}  {name:<28} {path.parent.name}/{path.name}")
    print(f"  {len(rows)} resources; outputs: {', '.join(sorted(rendered.outputs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
