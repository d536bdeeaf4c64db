"""`python -m gemma_runtime` is the same as the `gemma-runtime` command."""

from gemma_runtime.cli import main

raise SystemExit(main())
