"""Recompute the attribute thresholds on the mnist training split and show the class balance.

python -m latentzoo.data.attribute_thresholds
"""

from collections import Counter

from .attributes import (
    ATTRIBUTE_CLASSES,
    ATTRIBUTE_THRESHOLDS,
    bin_attribute,
    measure_attribute_values,
    tertile_thresholds,
)
from .datasets import load_dataset


def main() -> None:
    train = load_dataset("mnist", split="train")
    values = measure_attribute_values(train.pixel_values)
    for name, classes in ATTRIBUTE_CLASSES.items():
        counts = Counter(bin_attribute(name, values[name]))
        tertiles = ", ".join(f"{t:.4f}" for t in tertile_thresholds(values[name]))
        shares = ", ".join(f"{c} {counts[c] / len(train):.3f}" for c in classes)
        print(
            f"{name}: tertiles ({tertiles}), module constants {ATTRIBUTE_THRESHOLDS[name]}; shares {shares}"
        )


if __name__ == "__main__":
    main()
