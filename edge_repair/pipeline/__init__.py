"""RePAIR: watchdog (is this a forget request? which pair?), surgeon (a validated repair plan), pipeline."""
