"""Fine-tuning the backbone: the loop, its fast paths, the prefix cache, the speed plan, DDP, checkpoints, policy."""
