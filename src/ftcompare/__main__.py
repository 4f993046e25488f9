"""`python -m ftcompare`: the `ftcompare` command (ftcompare.cli)."""

from ftcompare.cli import main

raise SystemExit(main())
