"""scheduler of the runtime."""
