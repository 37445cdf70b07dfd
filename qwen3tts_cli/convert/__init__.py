"""Official checkpoint folder -> converted model folder (numpy only, no torch)."""
