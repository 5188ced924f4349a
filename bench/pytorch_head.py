"""The PyTorch twin of crates/worker/benches/head.rs: seconds per epoch of
the paper's head training on cached features.

10,222 random features of width 2048 (9,200 train, 1,022 valid), 120 classes,
nn.Linear(2048, 120), CrossEntropyLoss, SGD(lr=0.01, momentum=0.9), shuffled
batches of 16 taken from a precomputed tensor (no DataLoader: the features are
already in memory, as sweep's are), then a valid pass without gradients; 2
threads, as the bench machine has.

    python3 bench/pytorch_head.py            # 3 epochs
    python3 bench/pytorch_head.py --epochs 5
    python3 bench/pytorch_head.py --device cuda
"""

import argparse
import time

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    n, dim, classes, n_train, batch = 10_222, 2048, 120, 9_200, 16
    features = torch.rand(n, dim)  # non-negative, like pooled ResNet output
    labels = torch.randint(0, classes, (n,))
    perm = torch.randperm(n)
    x_train, y_train = features[perm[:n_train]].contiguous(), labels[perm[:n_train]].contiguous()
    x_valid, y_valid = features[perm[n_train:]].contiguous(), labels[perm[n_train:]].contiguous()

    device = torch.device(args.device)
    x_train, y_train, x_valid, y_valid = (t.to(device) for t in (x_train, y_train, x_valid, y_valid))
    head = torch.nn.Linear(dim, classes).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.1)

    times = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        head.train()
        running_loss, running_correct = 0.0, 0
        order = torch.randperm(n_train, device=device)
        for start in range(0, n_train, batch):
            idx = order[start : start + batch]
            xb, yb = x_train[idx], y_train[idx]
            optimizer.zero_grad()
            logits = head(xb)
            loss = criterion(logits, yb)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * xb.size(0)
            running_correct += (logits.argmax(1) == yb).sum().item()
        scheduler.step()
        head.eval()
        with torch.no_grad():
            valid_loss, valid_correct = 0.0, 0
            for start in range(0, x_valid.size(0), 4096):
                xb, yb = x_valid[start : start + 4096], y_valid[start : start + 4096]
                logits = head(xb)
                valid_loss += criterion(logits, yb).item() * xb.size(0)
                valid_correct += (logits.argmax(1) == yb).sum().item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        print(
            f"epoch {epoch + 1}: train loss {running_loss / n_train:.4f} acc {running_correct / n_train:.4f} "
            f"valid loss {valid_loss / x_valid.size(0):.4f} acc {valid_correct / x_valid.size(0):.4f} "
            f"{times[-1]:.3f} s"
        )
    print(
        f"pytorch head: {n_train} x {dim}, {classes} classes, batch {batch}: "
        f"{sum(times) / len(times):.3f} s/epoch (epochs: {' '.join(f'{t:.3f}' for t in times)}; "
        f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
