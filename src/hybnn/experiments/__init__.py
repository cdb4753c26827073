"""Experiments: the paper's reproduction, studies, reports and plots."""
