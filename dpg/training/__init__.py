"""Training the generator: models (`models`) and a run's parts built without TRL (`assembly`); completions →
examples → rewards (`rewards`, `heuristics`) for a whole generation batch (`batch_reward`); diversity
(`degeneration`); sampling datasets (`sampling`); and TRL's GRPOTrainer driven by them (`trainer`, `callbacks`)."""
