"""Backends: the only side effect of the library, behind the protocols in :mod:`.base`.

Nothing here imports wandb at import time; :mod:`.wandb` imports it when a run really starts.
"""
