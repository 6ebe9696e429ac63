"""vLLM engine actors, the engine pool, and the receiving end of the weight sync."""
