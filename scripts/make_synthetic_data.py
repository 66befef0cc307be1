"""Write a tiny data set in a real on-disk format, for smoke runs of the image and detection paths on a CPU.

    python scripts/make_synthetic_data.py cifar100 --root data/cifar100_toy       # CIFAR's python pickles
    python scripts/make_synthetic_data.py imagenet --root data/imagenet_toy       # an ImageFolder tree
    python scripts/make_synthetic_data.py coco --root data/coco_toy --images 64   # COCO 2017's layout

Each class has its own colour (CIFAR, ImageNet) or shape and colour (COCO), so a model learns it in a few steps;
`make cifar100-smoke` trains on the first one. Then point the task at it, e.g. for CIFAR:
``task.root=data/cifar100_toy task.download=false task.verify=false`` (the md5 check pins the official files).
"""

import argparse
from pathlib import Path

from gal.synthetic_data import write_cifar, write_image_folder
from gal.tasks.coco_data import write_synthetic_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["cifar10", "cifar100", "imagenet", "coco"])
    parser.add_argument("--root", type=Path, required=True, help="the folder task.root will name")
    parser.add_argument("--images", type=int, default=64, help="training images (COCO: per split)")
    parser.add_argument("--classes", type=int, default=4, help="ImageNet: class folders")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.kind in ("cifar10", "cifar100"):
        write_cifar(args.root, args.kind, n_train=args.images, n_test=max(1, args.images // 4), seed=args.seed)
    elif args.kind == "imagenet":
        per_class = max(1, args.images // args.classes)
        write_image_folder(args.root, [f"n{i:08d}" for i in range(args.classes)], per_class, 64, args.seed)
    else:
        for split in ("train2017", "val2017"):
            write_synthetic_coco(args.root, args.images, seed=args.seed, split=split)
    print(f"wrote a synthetic {args.kind} set to {args.root}")


if __name__ == "__main__":
    main()
