"""`python -m flowcraft_fast.daemon`: the same as `flowcraft-fastd` (supervised children)."""

from .cli import main

raise SystemExit(main())
