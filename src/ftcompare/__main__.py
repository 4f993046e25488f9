"""`python -m ftcompare`: the `ftcompare` command (ftcompare.use.cli)."""

from ftcompare.use import main

raise SystemExit(main())
