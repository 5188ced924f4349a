"""Pillow + torchvision on the images of benches/decode.rs, for comparison:
the same decode (Image.open(f).convert("RGB")) and eval transform
(Resize(224), CenterCrop(224), ToTensor(), Normalize), one process, one thread.

    DECODE_BENCH_DIR=/tmp/decode-images cargo bench -p sweep-worker --bench decode
    python3 crates/worker/benches/decode_pillow.py /tmp/decode-images
"""

import pathlib
import sys
import time

import torch
from PIL import Image
from torchvision import transforms


def main():
    files = sorted(pathlib.Path(sys.argv[1]).glob("*.jpg"))
    torch.set_num_threads(1)
    t = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    for f in files[:20]:
        t(Image.open(f).convert("RGB"))
    start = time.perf_counter()
    for f in files:
        t(Image.open(f).convert("RGB"))
    secs = time.perf_counter() - start
    print(f"Pillow {Image.__version__} + torchvision, 1 thread: {len(files) / secs:.0f} images/s, {secs:.2f} s")


if __name__ == "__main__":
    main()
