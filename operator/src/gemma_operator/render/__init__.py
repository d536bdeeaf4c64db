"""Pure rendering: a validated resource in, the Kubernetes objects it should have out. No kopf, no
kubernetes client, no I/O."""
