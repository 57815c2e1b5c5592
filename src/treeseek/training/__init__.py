"""Training on top of the core: classifier fine-tuning."""
