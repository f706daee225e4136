"""Downstream tasks: readers, alignment, PEFT methods, the fine-tuning stage, evaluation."""
