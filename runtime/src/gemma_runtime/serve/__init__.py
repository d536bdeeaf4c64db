"""Serving: sampling (and, with the serving issue, the engine, scheduler and HTTP server)."""
