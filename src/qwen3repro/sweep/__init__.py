"""Samples and sweep: what the sampling levers do to the distribution and the text, measured."""
