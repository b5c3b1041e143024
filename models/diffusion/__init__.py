"""Diffusion parts apart from each other: U-Net denoiser (unet), EDM preconditioning and loss (edm),
Karras-schedule samplers (sampler), CUDA-graph replay of a fixed-shape step (cuda_graph)."""
