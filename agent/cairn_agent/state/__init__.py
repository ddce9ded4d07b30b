"""Composing and restoring what a checkpoint holds: train state, model, optimizer, RNG, dataloader, PEFT, legacy."""
