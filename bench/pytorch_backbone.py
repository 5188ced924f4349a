"""PyTorch's side of the backbone benchmark (crates/worker/benches/backbone.rs).

    python bench/pytorch_backbone.py [ARCH] [BATCH] [SIZE] [ITERS] [DTYPE]

torchvision's model with weights=None (fc replaced by identity), eval mode,
torch.no_grad(), f32 or (DTYPE bf16) under torch.autocast("cpu",
dtype=torch.bfloat16), torch's default thread count; one warm-up pass, then
ITERS timed passes; prints the median images/s in the Rust bench's format.
Defaults: resnet50 16 224 5. Run alternately with
`cargo bench -p sweep-worker --bench backbone -- ARCH BATCH SIZE ITERS`.
"""

import sys
import time

import torch
import torchvision


def main() -> None:
    args = sys.argv[1:]
    arch = args[0] if len(args) > 0 else "resnet50"
    batch = int(args[1]) if len(args) > 1 else 16
    size = int(args[2]) if len(args) > 2 else 224
    iters = int(args[3]) if len(args) > 3 else 5
    dtype = args[4] if len(args) > 4 else "f32"
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    x = torch.randn(batch, 3, size, size)
    rates = []
    with torch.no_grad(), autocast:
        model(x)  # warm-up
        for _ in range(iters):
            start = time.perf_counter()
            y = model(x)
            rates.append(batch / (time.perf_counter() - start))
            assert y.shape[0] == batch
    rates.sort()
    print(
        f"pytorch {arch} {dtype} batch {batch} {size}x{size} threads {torch.get_num_threads()}: "
        f"median {rates[len(rates) // 2]:.2f} images/s (min {rates[0]:.2f}, max {rates[-1]:.2f}, {iters} passes)"
    )


if __name__ == "__main__":
    main()
