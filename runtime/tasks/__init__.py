"""tasks of the runtime."""
