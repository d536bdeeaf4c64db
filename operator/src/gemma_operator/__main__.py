"""`python -m gemma_operator` is the same as the `gemma-operator` command."""

from gemma_operator.cli import main

raise SystemExit(main())
