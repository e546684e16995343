"""AdamW with decoupled weight decay (bias and LayerNorm excluded) and the learning-rate schedule."""
from __future__ import annotations

import torch

from cnbert.training import TrainingConfig


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases and LayerNorm weights are not decayed (as in Google BERT)."""
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or param.ndim == 1


def build_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    on_cuda = any(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.999),
        eps=config.adam_epsilon,
        fused=on_cuda,  # one kernel for all parameters; the CPU path keeps the default foreach loop
    )


def build_scheduler(optimizer, config: TrainingConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: config.lr_multiplier(step, total_steps))
