"""``python -m smoke``: the smoke suite (see smoke/checks/runner.py)."""

from smoke.checks.runner import main

raise SystemExit(main())
