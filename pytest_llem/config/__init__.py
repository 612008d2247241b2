"""Study and experiment configuration: pydantic models, YAML loading, per-backend compatibility tables."""
