"""The scenario engine: the registry, the Context scenarios act through, and shared multi-step actions."""
