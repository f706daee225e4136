"""scalelab: the empirical science of language-model scaling, end to end.

Pretrain a ladder of Transformer LMs, fit scaling laws to it, fine-tune the models on
downstream tasks and report it all. Importing the package does no work and does not
import torch; each stage imports what it needs when it runs.
"""

__version__ = "0.3.0"
