"""Running one experiment: model, prompts, backend phases and the measured window."""
