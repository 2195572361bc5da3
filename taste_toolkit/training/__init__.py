"""Training: SpeechBrain Brains and data pipelines."""
