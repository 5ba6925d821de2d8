"""embedops."""
