"""Plots and the HTML/Markdown report."""
