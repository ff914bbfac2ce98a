"""api of the runtime."""
