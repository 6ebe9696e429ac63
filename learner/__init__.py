"""GRPO math, micro-batch packing and the learner that trains the shared LoRA adapter."""
