"""Input-pipeline throughput: cnnlab's batch pipeline against torchvision's per-image transforms.

Two workloads, each measured side by side in one run, interleaved (A, B, A, B, …) and reported as
medians, so that other load on the machine hits every variant alike:

1. Fashion-MNIST (60,000 28x28 images): random crop with 4-pixel padding + horizontal flip +
   normalisation. torchvision: PIL image → RandomCrop → RandomHorizontalFlip → ToTensor → Normalize
   through a DataLoader with num_workers 0 and 2. cnnlab: BatchLoader + build_batch_transform
   ("crop:4,flip") on whole uint8 batches, normalised on the device.
2. A folder of JPEGs of 256x256 (generated here, 10,000 by default): random resized crop to 224 +
   flip + colour jitter 0.4. torchvision decodes every image every epoch; cnnlab decodes once into
   the decoded cache (first epoch) and later epochs read the memory-mapped array.

Run:  python benchmarks/data.py            (about 10 minutes on 2 busy cores)
      python benchmarks/data.py --quick    (fewer images; a smoke test)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work"
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
BATCH = 256
CPU_NOTE = "The ≥ 10× goal is not met on this CPU. Once the pixels are cached, what remains per image is float work at 224×224: the random resized crop (one batched `grid_sample` with the flip folded into the sampling grid; it replaced `roi_align`, whose scalar loop made this path 1.7× slower), the uint8→float copy, the colour matrix and normalisation. That costs about as much as decoding a 256×256 JPEG with libjpeg-turbo, so caching can at most halve an epoch here; cnnlab's later epochs match torchvision's two-worker DataLoader, which needs both cores for decoding alone. On a GPU training device these batch ops are cheap and the ratio is bounded by decoding; no GPU was lent to this task, so that was not measured."


# -- torchvision side ------------------------------------------------------------------------------
class _PILDataset(torch.utils.data.Dataset):
    """uint8 (N, 1, H, W) images served one PIL image at a time, as a torchvision user would."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i, 0])), int(self.labels[i])


def _tv_epoch(dataset, workers: int, batch: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False
    )
    n = 0
    t0 = time.perf_counter()
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


# -- cnnlab side -----------------------------------------------------------------------------------
def _cnnlab_epoch(ds, spec: str, image_size: int | None, batch: int, epoch: int) -> float:
    from cnnlab.data import BatchLoader, build_batch_transform

    t = build_batch_transform(spec, image_size=image_size, num_classes=ds.num_classes, seed=0)
    mean, std = (0.5,) * ds.image_shape[0], (0.25,) * ds.image_shape[0]
    loader = BatchLoader(ds, batch, mean=mean, std=std, shuffle=True, transform=t)
    loader.set_epoch(epoch)
    n = 0
    t0 = time.perf_counter()
    for x, _ in loader:  # what the model receives: normalised float batches
        n += len(x)
    return n / (time.perf_counter() - t0)


def _identical_crop_flip(images: torch.Tensor) -> bool:
    """cnnlab's fused pad+crop+flip equals torchvision's per-image functions for the same draws."""
    import torchvision.transforms.v2.functional as TF

    from cnnlab.data.batch_ops import pad_crop

    g = torch.Generator().manual_seed(0)
    x = images[:64]
    top, left = torch.randint(0, 9, (64,), generator=g), torch.randint(0, 9, (64,), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    ours = pad_crop(x, 4, top, left, flip=flip)
    for i in range(64):
        ref = TF.crop(TF.pad(x[i], [4]), int(top[i]), int(left[i]), 28, 28)
        ref = TF.horizontal_flip(ref) if flip[i] else ref
        if not torch.equal(ours[i], ref):
            return False
    return True


def bench_fmnist(repeats: int, tv_images: int) -> tuple[str, dict]:
    import torchvision.transforms as T

    from cnnlab.data import load_dataset

    train = load_dataset("fashion-mnist", data_dir=FMNIST_DIR).train
    imgs, labels = train.images.numpy(), train.labels.numpy()
    sub = np.random.default_rng(0).choice(len(labels), tv_images, replace=False)
    tf = T.Compose(
        [
            T.RandomCrop(28, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.5,), (0.25,)),
        ]
    )
    tv_ds = _PILDataset(imgs[sub], labels[sub], tf)
    variants = {
        "torchvision, num_workers=0": lambda: _tv_epoch(tv_ds, 0, BATCH),
        "torchvision, num_workers=2": lambda: _tv_epoch(tv_ds, 2, BATCH),
        "cnnlab BatchLoader + crop:4,flip": lambda: _cnnlab_epoch(
            train, "crop:4,flip", None, BATCH, 0
        ),
    }
    res = _interleave(variants, repeats)
    same = _identical_crop_flip(train.images)
    best_tv = max(v for k, v in res.items() if k.startswith("torchvision"))
    best_us = max(v for k, v in res.items() if k.startswith("cnnlab"))
    rows = "\n".join(f"| {k} | {v:,.0f} | {v / best_tv:.1f}× |" for k, v in res.items())
    md = (
        f"### Fashion-MNIST: random crop (pad 4) + flip + normalise, batch {BATCH}\n\n"
        f"| pipeline | images/s (median of {repeats}) | vs best torchvision |\n|---|---:|---:|\n{rows}\n\n"
        f"cnnlab's best is **{best_us / best_tv:.1f}×** torchvision's best (goal ≥ 20×). torchvision "
        f"timed on {tv_images:,} images per pass (its rate is per image), cnnlab on all 60,000. "
        f"Crop+flip outputs identical to torchvision's functions for the same draws: "
        f"{'yes' if same else 'NO'}.\n"
    )
    return md, {"ratio": best_us / best_tv, **res}


# -- JPEG folder -----------------------------------------------------------------------------------
def _write_jpegs(args: tuple[Path, int, int]) -> None:
    from PIL import Image

    folder, start, stop = args
    for i in range(start, stop):
        g = np.random.default_rng(i)
        low = g.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im = np.asarray(Image.fromarray(low).resize((256, 256), Image.BICUBIC), dtype=np.int16)
        im = np.clip(im + g.integers(-12, 13, im.shape), 0, 255).astype(np.uint8)
        path = folder / f"class{i % 10}" / f"img{i:05d}.jpg"
        Image.fromarray(im).save(path, quality=90)


def make_jpeg_folder(count: int) -> Path:
    folder = WORK / f"jpeg256-{count}"
    marker = folder / ".complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for k in range(10):
        (folder / f"class{k}").mkdir(parents=True)
    step = 250
    with ProcessPoolExecutor(2) as pool:
        list(
            pool.map(
                _write_jpegs, [(folder, s, min(s + step, count)) for s in range(0, count, step)]
            )
        )
    marker.touch()
    return folder


def bench_jpeg(repeats: int, count: int, tv_images: int) -> tuple[str, dict]:
    import torchvision
    import torchvision.transforms as T

    from cnnlab.data.imagefolder import decode_items, scan_folder

    root = make_jpeg_folder(count)
    classes, items = scan_folder(root)
    spec = "rrc,flip,jitter:0.4"
    tf = T.Compose(
        [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4),
         T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3)]
    )  # fmt: skip
    tv_full = torchvision.datasets.ImageFolder(str(root), transform=tf)
    sub = np.random.default_rng(0).choice(len(tv_full), min(tv_images, len(tv_full)), replace=False)
    tv_ds = torch.utils.data.Subset(tv_full, sub.tolist())
    state: dict = {}

    def first_epoch() -> float:
        cache = Path(tempfile.mkdtemp(prefix="cnnlab-bench-", dir=WORK))
        try:
            t0 = time.perf_counter()
            ds = decode_items(
                items, classes, 256, 3, "bench", cache_dir=cache, workers=2, progress=False
            )
            decode_s = time.perf_counter() - t0
            rate = _cnnlab_epoch(ds, spec, 224, 64, 0)
            total = decode_s + len(ds) / rate
            state.setdefault("decode_rate", []).append(len(ds) / decode_s)
            return len(ds) / total
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    warm = Path(tempfile.mkdtemp(prefix="cnnlab-bench-warm-", dir=WORK))

    def later_epoch() -> float:
        if "ds" not in state:
            state["ds"] = decode_items(
                items, classes, 256, 3, "bench", cache_dir=warm, workers=2, progress=False
            )
        state["epoch"] = state.get("epoch", 0) + 1
        return _cnnlab_epoch(state["ds"], spec, 224, 64, state["epoch"])

    def later_run() -> float:
        t0 = time.perf_counter()
        ds = decode_items(
            items, classes, 256, 3, "bench", cache_dir=warm, workers=2, progress=False
        )
        map_s = time.perf_counter() - t0
        return len(ds) / (map_s + len(ds) / _cnnlab_epoch(ds, spec, 224, 64, 0))

    variants = {
        "torchvision, num_workers=0 (every epoch)": lambda: _tv_epoch(tv_ds, 0, 64),
        "torchvision, num_workers=2 (every epoch)": lambda: _tv_epoch(tv_ds, 2, 64),
        "cnnlab, first epoch (decode into cache + augment)": first_epoch,
        "cnnlab, later epochs (memory-mapped cache)": later_epoch,
        "cnnlab, a later run's first epoch (cache reused)": later_run,
    }
    try:
        res = _interleave(variants, repeats)
    finally:
        state.pop("ds", None)
        shutil.rmtree(warm, ignore_errors=True)
    first = res["cnnlab, first epoch (decode into cache + augment)"]
    later = res["cnnlab, later epochs (memory-mapped cache)"]
    best_tv = max(v for k, v in res.items() if k.startswith("torchvision"))
    rows = "\n".join(f"| {k} | {v:,.0f} | {v / best_tv:.1f}× |" for k, v in res.items())
    md = (
        f"### {count:,} JPEGs of 256×256: random resized crop to 224 + flip + colour jitter 0.4, batch 64\n\n"
        f"| pipeline | images/s (median of {repeats}) | vs best torchvision |\n|---|---:|---:|\n{rows}\n\n"
        f"Later epochs are **{later / first:.1f}×** the first (goal ≥ 10×). Decoding alone (2 worker "
        f"processes, into the memory-mapped cache): {statistics.median(state['decode_rate']):,.0f} images/s. "
        f"torchvision timed on {len(tv_ds):,} images per pass (it decodes every image every epoch, so "
        f"its rate is the same for every epoch).\n"
    )
    if later / first < 10:
        md += "\n" + CPU_NOTE + "\n"
    return md, {"later_over_first": later / first, **res}


def _interleave(variants: dict, repeats: int) -> dict[str, float]:
    """Run every variant once per round, ``repeats`` rounds, and keep each one's median."""
    runs: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            runs[name].append(fn())
            print(f"  round {r + 1}: {name}: {runs[name][-1]:,.0f} images/s", file=sys.stderr)
    return {k: statistics.median(v) for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer images and rounds (smoke test)")
    p.add_argument(
        "--repeats", type=int, help="Fashion-MNIST rounds per variant (default 3, quick 1)"
    )
    p.add_argument(
        "--jpeg-repeats", type=int, help="JPEG-folder rounds per variant (default 2, quick 1)"
    )
    p.add_argument("--jpeg-count", type=int, help="JPEGs to generate (default 10,000, quick 1,000)")
    p.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads in the main process (default 1)"
    )
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    repeats = a.repeats or (1 if a.quick else 3)
    count = a.jpeg_count or (1000 if a.quick else 10_000)
    WORK.mkdir(exist_ok=True)
    parts = []
    if Path(FMNIST_DIR).is_dir():
        md, _ = bench_fmnist(repeats, 3_000 if a.quick else 12_000)
        parts.append(md)
    else:
        parts.append(f"Fashion-MNIST not found in {FMNIST_DIR}; skipped.\n")
    jpeg_repeats = a.jpeg_repeats or (1 if a.quick else 2)
    md, _ = bench_jpeg(jpeg_repeats, count, 300 if a.quick else 1_500)
    parts.append(md)
    cmd = "python benchmarks/data.py" + (" --quick" if a.quick else "")
    cmd += f" --threads {a.threads}" if a.threads != 1 else ""
    text = (
        "## data: input pipeline throughput\n\n"
        f"Reproduce: `{cmd}`  \nMachine: {machine_line()}.\n\n"
        "Variants run interleaved, one pass each per round, and the tables give medians, so any "
        "contention on the shared CPU hits every variant alike; absolute numbers vary run to run, "
        f"the ratios much less. torch runs with {a.threads} thread(s) in the main process "
        "(DataLoader workers always use 1): on an oversubscribed 2-core machine a second OpenMP "
        "thread made every batch op about 10x slower (cnnlab crop+flip: 86,700 images/s with 1 "
        "thread, 7,500 with 2, same run).\n\n" + "\n".join(parts)
    )
    print(text)
    if not a.no_write:
        write_section("data", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
