"""Differentially private fine-tuning: LoRA + DP-SGD (opacus), accounting audit, grids."""
