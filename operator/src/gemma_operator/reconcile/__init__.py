"""Pure decisions: children and observations in, status and events out. No kopf, no client, no I/O."""
