"""Test-session settings."""

import torch

# The suite's networks are tiny: one thread is faster and immune to a busy second core.
torch.set_num_threads(1)
