"""The CI bot: command line, patch series in, summaries out."""
