"""What an experiment runs: the model it loads and the prompts it feeds."""
