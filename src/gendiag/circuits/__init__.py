"""Circuit analysis of fine-tuned models with TransformerLens: minimal pairs, logit lens, DLA, patching."""
