"""graph of the runtime."""
