"""Small stand-ins for optional libraries the test machine need not have (torch)."""

from __future__ import annotations

from typing import Any

import numpy as np


class FakeTensor:
    """A stand-in for a torch tensor: its module is ``torch``; shape, item, detach, cpu, numpy.

    Routing recognises tensors by module name and duck typing, so this is what it sees of one.
    """

    def __init__(self, data: Any) -> None:
        self._array = np.asarray(data)
        self.detached = False

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape (torch.Size is a tuple)."""
        return tuple(self._array.shape)

    def item(self) -> Any:
        """The Python scalar of a one-element tensor."""
        return self._array.item()

    def detach(self) -> FakeTensor:
        """A tensor without autograd history (here: the same data)."""
        out = FakeTensor(self._array)
        out.detached = True
        return out

    def cpu(self) -> FakeTensor:
        """The tensor on the CPU."""
        return self

    def numpy(self) -> Any:
        """The data as a numpy array (torch refuses this before detach when it requires grad)."""
        return self._array


FakeTensor.__module__ = "torch"
