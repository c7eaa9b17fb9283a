"""``python -m smoke``: the smoke suite (see smoke/runner.py)."""

from smoke.runner import main

raise SystemExit(main())
