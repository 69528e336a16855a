"""Per-example seeds for the random per-image augmentation, so that resumed and multi-worker runs are exact.

`SeededAugmentation` wraps a map-style training dataset whose transform draws from torch's global RNG (crop, flip,
RandAugment, colour jitter): example `i` of epoch `e` is transformed under its own seed, derived from (seed, e, i),
inside `torch.random.fork_rng`, so the global RNG of the process is left as it was. What an example looks like then
depends on neither the data-loader worker that loads it, nor the number of workers or processes, nor what was loaded
before it, and a resumed run (whose first batch is loaded before `Trainer` restores the RNG state) sees the same images
as the uninterrupted one. The epoch comes from `set_epoch`, which accelerate's data loader calls every epoch.
"""

import torch

_MASK = (1 << 63) - 1


def example_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for example `index` of epoch `epoch` (splitmix64-style mixing of the three numbers)."""
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & ((1 << 64) - 1)
    value ^= value >> 31
    value = (value * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    return (value ^ (value >> 29)) & _MASK


class SeededAugmentation(torch.utils.data.Dataset):
    """`dataset` with every example transformed under `example_seed(seed, epoch, index)` (see the module docstring)."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(example_seed(self.seed, self.epoch, int(index)))
            return self.dataset[index]

    def __getattr__(self, name):  # column_names, features, … of the wrapped dataset; not `__getitems__`, which
        if name == "dataset" or name.startswith("__"):  # the data loader would call instead of `__getitem__`
            raise AttributeError(name)
        return getattr(self.dataset, name)


__all__ = ["SeededAugmentation", "example_seed"]
