"""Batched scoring engines: perplexity/IFD on causal LMs, sentence embeddings."""
