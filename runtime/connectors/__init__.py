"""connectors of the runtime."""
