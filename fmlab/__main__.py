"""`python -m fmlab`: see fmlab.cli."""

from fmlab.cli import main

raise SystemExit(main())
