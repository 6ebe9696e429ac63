"""Coordinator: config, the self-play loop, the question pool, checkpoints and tracking."""
