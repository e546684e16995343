"""cnbert: fine-tuning Chinese BERT-family models on Chinese downstream tasks.

Importing cnbert or any of its framework-neutral modules never imports torch or tensorflow;
only `cnbert.torch`, `cnbert.kernels` and `cnbert.tf` do.
"""

__version__ = "0.1.0"
