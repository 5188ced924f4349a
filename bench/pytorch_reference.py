#!/usr/bin/env python3
"""The paper's training loop in PyTorch, for side-by-side timing with sweep.

Reads a data set in the Kaggle dog-breed layout (labels.csv with id,breed and
train/<id>.jpg), e.g. the one `sweep synth --out DIR` writes (10,222 images of
500x375 in 120 classes by default), and times two things on one machine:

  paper     the paper's loop (its appendix): a frozen ResNet-50 with a new
            Linear(2048, classes) head, the backbone run on every image in every
            epoch, DataLoader(batch_size, shuffle, num_workers), SGD with
            momentum, StepLR(15, 0.1), CrossEntropyLoss, `--epochs` epochs;
  features  the same head training on features precomputed in one backbone
            pass (what sweep does), timed as: one pass + `--epochs` head epochs.

The backbone is frozen in eval mode (batch norm on running statistics), as in
sweep. No weights are downloaded (weights=None): timings do not depend on the
weights' values. Runs offline with the GPU machine's preinstalled torch and
torchvision, or on a CPU. Prints one JSON object.

usage: python3 bench/pytorch_reference.py --data DIR [--device cuda] [--epochs 14]
       [--paper-epochs 1] [--batch-size 16] [--workers 2] [--max-images N] [--mode both]
"""
import argparse
import json
import os
import time

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class DogDataset(Dataset):
    def __init__(self, rows, root, transform):
        self.rows, self.root, self.transform = rows, root, transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        image_id, label = self.rows[i]
        image = Image.open(os.path.join(self.root, "train", image_id + ".jpg")).convert("RGB")
        return self.transform(image), label


def load_rows(root, max_images):
    with open(os.path.join(root, "labels.csv")) as f:
        header = f.readline().strip()
        assert header == "id,breed", f"{root}/labels.csv: header must be id,breed, got {header}"
        rows = [line.strip().split(",") for line in f if line.strip()]
    if max_images:
        rows = rows[:max_images]
    classes = sorted({breed for _, breed in rows})
    index = {c: i for i, c in enumerate(classes)}
    return [(i, index[b]) for i, b in rows], len(classes)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=14, help="head epochs (the paper: 14)")
    ap.add_argument("--paper-epochs", type=int, default=1,
                    help="epochs of the paper's loop actually run; the total is extrapolated to --epochs")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--backbone-batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--max-images", type=int, default=0)
    ap.add_argument("--mode", choices=["paper", "features", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    rows, classes = load_rows(args.data, args.max_images)
    # The paper's split: pandas' sample(frac=0.9) for train, the rest for valid.
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(rows), generator=g).tolist()
    n_train = round(len(rows) * 0.9)
    train_rows = [rows[i] for i in perm[:n_train]]
    valid_rows = [rows[i] for i in perm[n_train:]]
    tf = transforms.Compose([
        transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    train_ds, valid_ds = DogDataset(train_rows, args.data, tf), DogDataset(valid_rows, args.data, tf)

    resnet = torchvision.models.resnet50(weights=None)
    for p in resnet.parameters():
        p.requires_grad = False
    resnet.fc = torch.nn.Linear(resnet.fc.in_features, classes)
    resnet = resnet.to(device).eval()
    criterion = torch.nn.CrossEntropyLoss()
    out = {
        "tool": "pytorch", "torch": torch.__version__, "torchvision": torchvision.__version__,
        "device": str(device), "card": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "images": len(rows), "classes": classes,
        "train": len(train_rows), "valid": len(valid_rows), "batch_size": args.batch_size,
        "workers": args.workers, "epochs": args.epochs,
    }

    if args.mode in ("paper", "both"):
        optimizer = torch.optim.SGD(resnet.fc.parameters(), lr=args.lr, momentum=args.momentum)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.1)
        loaders = {
            "train": DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers),
            "valid": DataLoader(valid_ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers),
        }
        epoch_seconds = []
        for _ in range(args.paper_epochs):
            sync(device)
            start = time.perf_counter()
            for phase in ("train", "valid"):
                correct, total = 0, 0
                for x, y in loaders[phase]:
                    x, y = x.to(device), y.to(device)
                    with torch.set_grad_enabled(phase == "train"):
                        logits = resnet(x)
                        loss = criterion(logits, y)
                        if phase == "train":
                            optimizer.zero_grad()
                            loss.backward()
                            optimizer.step()
                    correct += (logits.argmax(1) == y).sum().item()
                    total += y.numel()
            scheduler.step()
            sync(device)
            epoch_seconds.append(time.perf_counter() - start)
        out["paper_epoch_seconds"] = epoch_seconds
        out["paper_job_seconds_extrapolated"] = sum(epoch_seconds) / len(epoch_seconds) * args.epochs
        out["paper_valid_acc_last"] = correct / max(total, 1)

    if args.mode in ("features", "both"):
        backbone = torch.nn.Sequential(*list(resnet.children())[:-1]).eval()
        feats = {}
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            for name, ds in (("train", train_ds), ("valid", valid_ds)):
                xs, ys = [], []
                for x, y in DataLoader(ds, batch_size=args.backbone_batch, num_workers=args.workers):
                    xs.append(backbone(x.to(device)).flatten(1))
                    ys.append(y.to(device))
                feats[name] = (torch.cat(xs), torch.cat(ys))
        sync(device)
        backbone_seconds = time.perf_counter() - start
        out["backbone_pass_seconds"] = backbone_seconds
        out["backbone_images_per_second"] = len(rows) / backbone_seconds

        head = torch.nn.Linear(2048, classes).to(device)
        optimizer = torch.optim.SGD(head.parameters(), lr=args.lr, momentum=args.momentum)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.1)
        x_train, y_train = feats["train"]
        x_valid, y_valid = feats["valid"]
        head_seconds = []
        best = 0.0
        for _ in range(args.epochs):
            sync(device)
            start = time.perf_counter()
            order = torch.randperm(len(y_train), device=device)
            for i in range(0, len(order), args.batch_size):
                idx = order[i:i + args.batch_size]
                loss = criterion(head(x_train[idx]), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                best = max(best, (head(x_valid).argmax(1) == y_valid).float().mean().item())
            scheduler.step()
            sync(device)
            head_seconds.append(time.perf_counter() - start)
        out["head_epoch_seconds_median"] = sorted(head_seconds)[len(head_seconds) // 2]
        out["features_job_seconds"] = backbone_seconds + sum(head_seconds)
        out["features_best_valid_acc"] = best
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
