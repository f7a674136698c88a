"""How many torch threads suit small networks on this machine? (sets run/device.py's default)

Times acting (forward under inference_mode) and one Adam training step for the network sizes
rlfoundry's presets use, with 1 and 2 intra-op threads, alternating, median of repeats.
Run: .venv/bin/python benchmarks/torch_threads.py
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

CASES = [  # (name, input size, widths, outputs, batch, training?)
    ("act  64x64   batch 8", 4, (64, 64), 2, 8, False),
    ("train 64x64  batch 256", 4, (64, 64), 2, 256, True),
    ("train 256x256 batch 256", 17, (256, 256), 6, 256, True),
]


def network(inputs: int, widths: tuple[int, ...], outputs: int) -> nn.Module:
    layers, size = [], inputs
    for width in widths:
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, outputs))


def time_case(inputs, widths, outputs, batch, training, repeats=300) -> float:
    model = network(inputs, widths, outputs)
    optimizer = torch.optim.Adam(model.parameters())
    data = torch.randn(batch, inputs)

    def once():
        if training:
            optimizer.zero_grad()
            model(data).square().mean().backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                model(data)

    for _ in range(30):
        once()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - start) / repeats * 1e6


def main() -> None:
    print("| case | 1 thread (us) | 2 threads (us) | ratio |")
    print("|---|---|---|---|")
    for name, inputs, widths, outputs, batch, training in CASES:
        samples = {1: [], 2: []}
        for _ in range(5):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                samples[threads].append(time_case(inputs, widths, outputs, batch, training))
        one, two = statistics.median(samples[1]), statistics.median(samples[2])
        print(f"| {name} | {one:.0f} | {two:.0f} | {two / one:.2f} |")


if __name__ == "__main__":
    main()
