"""The one training loop (pretraining and fine-tuning), schedules, checkpoints."""
