"""Faster exact points and cheaper pictures: BatchNorm folding, compiling, shortcuts, several points per pass, estimates."""
