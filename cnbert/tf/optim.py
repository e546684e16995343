"""AdamW for the TF trainer, matching cnbert.torch.optim."""
from __future__ import annotations

import keras
import tensorflow as tf

from cnbert.training import TrainingConfig


@keras.saving.register_keras_serializable(package="cnbert")
class AdamW(keras.optimizers.AdamW):
    """keras.optimizers.AdamW with two deliberate differences, so that the TF and PyTorch trainers
    take the same steps:

    - epsilon is added to the bias-corrected √v̂, as torch.optim.AdamW does. Keras adds it to
      the uncorrected √v (the "epsilon hat" form), where it acts like ε/√(1-β₂ᵗ) in torch's
      form: 32× larger at step 1, which visibly changes early updates of small gradients;
    - gradients reach `apply` already summed over replicas: the trainer all-reduces them first,
      so that global-norm clipping (done in `apply`) sees the global gradient. Keras's TF
      backend would otherwise clip each replica's partial gradient and then sum.
    """

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        step = tf.cast(self.iterations + 1, variable.dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, variable.dtype), tf.cast(self.beta_2, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (gradient - m) * (1 - beta_1))
        self.assign_add(v, (tf.square(gradient) - v) * (1 - beta_2))
        denominator = tf.sqrt(v) / tf.sqrt(1 - tf.pow(beta_2, step)) + tf.cast(self.epsilon, variable.dtype)
        self.assign_sub(variable, (lr / (1 - tf.pow(beta_1, step))) * m / denominator)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


def build_optimizer(config: TrainingConfig, variables, learning_rate):
    """AdamW (weight decay on matrices only: biases and LayerNorm gamma/beta, the 1-D variables,
    are excluded, as in cnbert.torch.optim.no_decay), global-norm clipping, and a loss-scale
    wrapper for fp16. `learning_rate`: a float, schedule or zero-argument callable."""
    optimizer = AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay, beta_1=0.9, beta_2=0.999,
                      epsilon=config.adam_epsilon, global_clipnorm=config.max_grad_norm or None)
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) == 1])
    if config.precision == "fp16":
        # torch.amp.GradScaler's defaults: the same loss-scaling policy in both frameworks (whether a
        # given step overflows depends on rounding, so the two may still skip different steps)
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**16, dynamic_growth_steps=2000)
    optimizer.build(variables)
    return optimizer
