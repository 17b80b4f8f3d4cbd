"""Stages 3 and 6, samples and sweep: what the sampling levers do to the distribution and the text, measured."""
