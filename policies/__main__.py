"""Entry point the Pulumi engine runs for ``--policy-pack policies``: build the pack, nothing else.

``PolicyPack(...)`` starts the analyzer's gRPC server, prints its port and never returns, so
nothing else may live here (tests and ``make policy`` import ``policies.pack`` instead).

The engine runs this file as a script, so ``sys.path[0]`` is this directory, where ``redis.py`` and
``kubernetes.py`` would shadow the libraries of the same names; the directory is swapped for its
parent and the rules are imported as the package they are.
"""

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

pack = importlib.import_module(f"{HERE.name}.pack")

PolicyPack(
    name=pack.PACK_NAME,
    description=pack.DESCRIPTION,
    policies=pack.POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
)
