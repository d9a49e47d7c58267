"""Teacher backends: local transformers, OpenAI-compatible endpoints, KB templates."""
