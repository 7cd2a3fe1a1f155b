"""A small user project: a training function and an evaluation function, instrumented.

``training.train`` fits ``y = w * x`` by gradient descent, one point of the ``fit`` stage per
epoch; ``evaluation.evaluate`` puts the final errors in the run's summary. Its tests
(``test_user_project.py``) use only the ``instrument_recorder`` fixture: no W&B account, no
network, no wandb files.
"""
