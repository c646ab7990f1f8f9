"""diffattr: attribute what a diffusion model does to its training data."""
