"""scikit-learn's 8x8 digits: shipped inside the sklearn wheel, so always available offline."""
from __future__ import annotations

import torch

from engine.data.registry import DATASETS
from engine.data.bundle import DataBundle, RawSet, make_bundle
from engine.spec import DatasetSpec


@DATASETS.register("digits", "scikit-learn's 8x8 digits, embedded (1,797 images)",
                   shape=(1, 8, 8), classes=10, ignores=("root", "download"))
def load_digits(spec: DatasetSpec) -> DataBundle:
    # Imported here: sklearn takes seconds to import and only this loader needs it.
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = torch.from_numpy(data.images).float().unsqueeze(1)  # (N, 1, 8, 8), values 0..16
    y = torch.from_numpy(data.target).long()
    names = [str(int(t)) for t in data.target_names]
    # No official test split: make_bundle carves one by spec.test_fraction.
    return make_bundle("digits", names, spec, RawSet(x, y), None, pixel_max=16.0)
