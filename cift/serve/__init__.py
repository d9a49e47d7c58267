"""Serving: an OpenAI-compatible server over the registry's `production` alias, with hot swap.

`cift serve` (cli.py) builds a backend (engine.py: local models with batching and hot swap;
vllm.py: a running vLLM with dynamic LoRA loading) and serves it with app.py's FastAPI app.
"""
