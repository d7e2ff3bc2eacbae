"""The training/evaluation loop on Accelerate: seeding, checkpoint + resume, NaN guard, progress."""
