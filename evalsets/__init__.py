"""Frozen evaluation sets; never imported by the training code."""
