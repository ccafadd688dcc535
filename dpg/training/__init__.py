"""Training the generator: models, completions → examples → rewards (`rewards`, `heuristics`), diversity
(`degeneration`), sampling datasets (`sampling`), and TRL's GRPOTrainer driven by them (`trainer`)."""
