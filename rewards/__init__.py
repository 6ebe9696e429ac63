"""Rewards: pure reward functions for the three roles, verifiable grading, and the judge rubric loader.

Leaves out parsing of model responses (agents/parsing.py) and any Ray, vLLM or logging code.
"""
