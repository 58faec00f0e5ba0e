"""Hugging Face backbones: the family decision, loading, input formatting, scoring, metrics,
devices, offline e5 weights.
"""
