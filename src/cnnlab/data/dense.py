"""The dataset of dense tasks: images with a variable number of boxes each, and per-pixel masks.

Detection and segmentation labels do not fit :class:`~cnnlab.data.ImageDataset`'s one label per
image, so :class:`DenseDataset` keeps, beside the same uint8 ``(N, C, H, W)`` images:

* ``boxes[i]`` — a float ``(K_i, 4)`` tensor of ``x1, y1, x2, y2`` in pixel-edge coordinates (a box
  covering pixel columns 3..7 has ``x1 = 3, x2 = 8``), and ``box_labels[i]`` (``K_i``,) class ids
  ``0..len(classes) - 1``;
* ``masks`` — uint8 ``(N, H, W)`` semantic masks: 0 is background, ``k + 1`` is ``classes[k]`` and
  :data:`IGNORE_INDEX` (255) is a pixel that is not scored (VOC's object borders);
* ``instances`` — optional uint8 ``(N, H, W)``: pixel value ``j + 1`` belongs to box ``j`` of that
  image (for mask areas in the COCO evaluation and instance overlays).

:class:`DenseLoader` is the dense counterpart of :class:`~cnnlab.data.BatchLoader`: the same
shuffle order (a pure function of seed and epoch), sharding, normalisation on the device; it yields
``(x, DenseTarget)`` so the training loop never has to know what a target holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.data.decode import decode_image
from cnnlab.data.loader import normalize_batch
from cnnlab.errors import DataError

IGNORE_INDEX = 255
DENSE_TASKS = ("detection", "segmentation")


@dataclass
class DenseDataset:
    """Decoded images of one split with their boxes and/or masks (see the module docstring).

    ``task`` is the task the data is meant for when the user does not say (``detection`` when there
    are boxes); ``tasks`` every task it can serve.
    """

    images: torch.Tensor
    boxes: list[torch.Tensor] | None
    box_labels: list[torch.Tensor] | None
    masks: torch.Tensor | None
    classes: list[str]
    name: str
    instances: torch.Tensor | None = None
    paths: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    task: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be a uint8 (N, C, H, W) tensor; got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        n, _, h, w = self.images.shape
        if (self.boxes is None) != (self.box_labels is None):
            raise DataError("boxes and box_labels must be given together")
        if self.boxes is not None:
            if len(self.boxes) != n or len(self.box_labels) != n:  # type: ignore[arg-type]
                raise DataError(f"{n} images but {len(self.boxes)} box lists")
            self.boxes = [b.to(torch.float32).reshape(-1, 4) for b in self.boxes]
            self.box_labels = [lb.to(torch.int64).reshape(-1) for lb in self.box_labels]  # type: ignore[union-attr]
        for name in ("masks", "instances"):
            m = getattr(self, name)
            if m is not None and (m.dtype != torch.uint8 or tuple(m.shape) != (n, h, w)):
                raise DataError(
                    f"{name} must be uint8 (N, H, W) = ({n}, {h}, {w}); got {m.dtype} "
                    f"{tuple(m.shape)}"
                )
        if self.boxes is None and self.masks is None:
            raise DataError("a dense dataset needs boxes, masks or both")
        if not self.task:
            self.task = "detection" if self.boxes is not None else "segmentation"

    def __len__(self) -> int:
        return len(self.images)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks these labels can train: detection needs boxes, segmentation masks."""
        out = []
        if self.boxes is not None:
            out.append("detection")
        if self.masks is not None:
            out.append("segmentation")
        return tuple(out)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        """Object classes (background not counted)."""
        return len(self.classes)

    def class_counts(self) -> list[int]:
        """Objects per class: boxes when there are boxes, else images where the class appears."""
        k = self.num_classes
        if self.box_labels is not None:
            labels = torch.cat([torch.zeros(0, dtype=torch.int64), *self.box_labels])
            return torch.bincount(labels, minlength=k)[:k].tolist()
        assert self.masks is not None
        present = torch.zeros(k, dtype=torch.int64)
        for m in self.masks.split(1024):
            flat = m.reshape(len(m), -1).long()
            for c in range(k):
                present[c] += (flat == c + 1).any(1).sum()
        return present.tolist()

    def subset(self, index: torch.Tensor) -> DenseDataset:
        """The images at ``index`` (1-D), with their boxes and masks."""
        idx = index.tolist()
        return replace(
            self,
            images=self.images[index],
            boxes=[self.boxes[i] for i in idx] if self.boxes is not None else None,
            box_labels=[self.box_labels[i] for i in idx] if self.box_labels is not None else None,
            masks=self.masks[index] if self.masks is not None else None,
            instances=self.instances[index] if self.instances is not None else None,
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            skipped=list(self.skipped),
        )

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of pixel values scaled to [0, 1]."""
        x = self.images[:4000].to(torch.float32).div_(255)
        mean = x.mean((0, 2, 3)).tolist()
        std = x.std((0, 2, 3)).clamp_min(1e-3).tolist()
        return tuple(round(m, 4) for m in mean), tuple(round(s, 4) for s in std)

    def resized(self, size: int) -> DenseDataset:
        """Every image resized to ``size`` x ``size`` (bilinear), boxes scaled, masks nearest."""
        _, _, h, w = self.images.shape
        if (h, w) == (size, size):
            return self
        images = torch.cat(
            [
                F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True)
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
                for c in self.images.split(1024)
            ]
        )
        scale = torch.tensor([size / w, size / h, size / w, size / h])

        def near(m: torch.Tensor | None) -> torch.Tensor | None:
            if m is None:
                return None
            return F.interpolate(m[:, None].float(), size=(size, size), mode="nearest-exact")[
                :, 0
            ].to(torch.uint8)

        return replace(
            self,
            images=images,
            boxes=[b * scale for b in self.boxes] if self.boxes is not None else None,
            masks=near(self.masks),
            instances=near(self.instances),
        )


def concat_dense(parts: Sequence[DenseDataset]) -> DenseDataset:
    """One dataset from several of the same image size and classes (e.g. chunks of a split)."""
    first = parts[0]

    def cat(name: str) -> torch.Tensor | None:
        vals = [getattr(p, name) for p in parts]
        return None if vals[0] is None else torch.cat(vals)

    def join(name: str) -> list | None:
        vals = [getattr(p, name) for p in parts]
        return None if vals[0] is None else [v for vs in vals for v in vs]

    return replace(
        first,
        images=torch.cat([p.images for p in parts]),
        boxes=join("boxes"),
        box_labels=join("box_labels"),
        masks=cat("masks"),
        instances=cat("instances"),
        paths=join("paths"),
        skipped=[s for p in parts for s in p.skipped],
    )


@dataclass
class DenseTarget:
    """The targets of one batch: per-image boxes and labels, semantic masks, dataset indices.

    ``boxes``/``labels`` are lists with one tensor per image (``None`` when the data has no boxes);
    ``masks`` is int64 ``(N, H, W)`` with :data:`IGNORE_INDEX` for unscored pixels (or ``None``).
    """

    boxes: list[torch.Tensor] | None
    labels: list[torch.Tensor] | None
    masks: torch.Tensor | None
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)

    def to(self, device: torch.device | str) -> DenseTarget:
        """The same targets on ``device``."""
        return DenseTarget(
            [b.to(device) for b in self.boxes] if self.boxes is not None else None,
            [lb.to(device) for lb in self.labels] if self.labels is not None else None,
            self.masks.to(device) if self.masks is not None else None,
            self.index,
        )

    def yolo_targets(self) -> list[torch.Tensor]:
        """Per image ``(K, 5)``: ``class, x1, y1, x2, y2`` — what :func:`cnnlab.models.yolo.yolo_loss` takes."""
        if self.boxes is None or self.labels is None:
            raise DataError("these targets have no boxes")
        return [
            torch.cat([lb.to(b.dtype)[:, None], b], 1) for b, lb in zip(self.boxes, self.labels)
        ]


DenseTransform = Callable[[torch.Tensor, DenseTarget], tuple[torch.Tensor, DenseTarget]]


class DenseLoader:
    """Iterate over a :class:`DenseDataset` in ``(images, DenseTarget)`` batches on ``device``.

    Same options and shuffle order as :class:`~cnnlab.data.BatchLoader`; ``transform`` (e.g.
    :func:`cnnlab.data.dense_augment.build_dense_transform`) gets the uint8 batch and its targets on
    the device and must move boxes and masks with the pixels; normalisation happens after it.
    """

    def __init__(
        self,
        dataset: DenseDataset,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        transform: DenseTransform | None = None,
        channels_last: bool = False,
        indices: torch.Tensor | None = None,
    ):
        self.dataset, self.batch_size = dataset, batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.device = torch.device(device)
        self.transform = transform
        self.channels_last = channels_last
        self.indices = indices
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle order (and augmentation draws) the next iteration uses."""
        self.epoch = epoch
        reseed = getattr(self.transform, "set_epoch", None)
        if reseed is not None:
            reseed(epoch)

    def _order(self) -> torch.Tensor:
        base = self.indices if self.indices is not None else torch.arange(len(self.dataset))
        if not self.shuffle:
            return base
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return base[torch.randperm(len(base), generator=g)]

    def __len__(self) -> int:
        n = len(self.indices) if self.indices is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, DenseTarget]:
        """The raw (uint8, untransformed) batch of dataset indices ``idx``, on the device."""
        ds = self.dataset
        ids = idx.tolist()
        target = DenseTarget(
            [ds.boxes[i] for i in ids] if ds.boxes is not None else None,
            [ds.box_labels[i] for i in ids] if ds.box_labels is not None else None,
            ds.masks[idx].long() if ds.masks is not None else None,
            idx,
        ).to(self.device)
        return ds.images[idx].to(self.device, non_blocking=True), target

    def __iter__(self) -> Iterator[tuple[torch.Tensor, DenseTarget]]:
        order = self._order()
        for i in range(len(self)):
            x, y = self.batch(order[i * self.batch_size : (i + 1) * self.batch_size])
            if self.transform is not None:
                x, y = self.transform(x, y)
            x = normalize_batch(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def boxes_from_instances(instances: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight pixel-edge boxes ``(count, 4)`` of instance ids ``1..count`` in one (H, W) map.

    Also returns each instance's pixel area; an id with no pixel gets area 0 and a zero box.
    """
    boxes = torch.zeros(count, 4)
    areas = torch.zeros(count, dtype=torch.int64)
    for j in range(count):
        m = instances == j + 1
        if not bool(m.any()):
            continue
        rows = torch.nonzero(m.any(1)).flatten()
        cols = torch.nonzero(m.any(0)).flatten()
        boxes[j] = torch.tensor(
            [cols[0].item(), rows[0].item(), cols[-1].item() + 1, rows[-1].item() + 1],
            dtype=torch.float32,
        )
        areas[j] = m.sum()
    return boxes, areas


# ------------------------------------------------------------------------------ files → a dataset

DEFAULT_DENSE_SIZE = 128
ORIENTATION_TAG = 0x0112


@dataclass
class DenseRecord:
    """One image file and its labels in the file's own pixels, before decoding.

    ``boxes`` are xyxy pixel edges, ``labels`` class ids ``0..K-1``; ``mask`` (optional) returns
    the semantic mask (H, W) uint8 of the original image (0 background, ``k + 1`` class ``k``,
    255 ignored) and may raise ``ValueError`` with a reason.
    """

    path: str
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    mask: Callable[[], object] | None = None


def image_size_of(path: str) -> tuple[int, int]:
    """(H, W) of an image file as decoded (EXIF rotation applied), from its header only."""
    with Image.open(path) as im:
        w, h = im.size
        try:
            turned = im.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
        except Exception:  # a corrupt EXIF block: decode_image ignores it too
            turned = False
    return (w, h) if turned else (h, w)


def decode_dense(
    records: Sequence[DenseRecord],
    classes: list[str],
    name: str,
    *,
    size: int | None = None,
    channels: int = 3,
    has_boxes: bool = True,
    has_masks: bool = False,
    skipped: list[tuple[str, str]] | None = None,
) -> DenseDataset:
    """Decode ``records`` at ``size`` x ``size`` (stretched) with boxes scaled and masks nearest.

    An image that is missing or cannot be decoded, or whose mask is unreadable or of another size,
    is skipped and listed in ``skipped`` with the reason (like a corrupt image of a folder); boxes
    were already validated by the format readers.
    """
    size = int(size or DEFAULT_DENSE_SIZE)
    skipped = list(skipped or [])
    images, boxes, labels, masks, paths = [], [], [], [], []
    for r in records:
        try:
            h, w = image_size_of(r.path)
            img = decode_image(r.path, size, channels)
        except FileNotFoundError:
            skipped.append((r.path, "image file not found"))
            continue
        except (ValueError, OSError, SyntaxError) as exc:
            skipped.append((r.path, str(exc).splitlines()[0][:200] or type(exc).__name__))
            continue
        mask = None
        if has_masks:
            try:
                m = np.asarray(r.mask()) if r.mask is not None else np.zeros((h, w), np.uint8)
            except (ValueError, OSError, SyntaxError) as exc:
                skipped.append((r.path, f"mask: {str(exc).splitlines()[0][:200]}"))
                continue
            if m.shape != (h, w):
                skipped.append(
                    (r.path, f"mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}")
                )
                continue
            mt = torch.from_numpy(np.ascontiguousarray(m, dtype=np.uint8))[None, None].float()
            mask = F.interpolate(mt, size=(size, size), mode="nearest-exact")[0, 0]
            masks.append(mask.to(torch.uint8))
        scale = torch.tensor([size / w, size / h, size / w, size / h])
        boxes.append(torch.tensor(r.boxes, dtype=torch.float32).reshape(-1, 4) * scale)
        labels.append(torch.tensor(r.labels, dtype=torch.int64))
        images.append(torch.from_numpy(np.array(img, np.uint8)))
        paths.append(r.path)
    if not images:
        raise DataError(
            f"no image of '{name}' could be loaded ({len(skipped)} skipped"
            + (f", first: {skipped[0][0]}: {skipped[0][1]}" if skipped else "")
            + ")"
        )
    return DenseDataset(
        images=torch.stack(images),
        boxes=boxes if has_boxes else None,
        box_labels=labels if has_boxes else None,
        masks=torch.stack(masks) if has_masks else None,
        classes=list(classes),
        name=name,
        paths=paths,
        skipped=skipped,
    )


def box_problem(box: Sequence[float], width: int, height: int, tol: float = 1.0) -> str | None:
    """Why an xyxy box cannot be used (outside the image, empty, not finite), or None if fine."""
    if len(box) != 4 or not all(np.isfinite(v) for v in box):
        return f"box {list(box)} is not four finite numbers"
    x1, y1, x2, y2 = box
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return f"box {[round(v, 1) for v in box]} has no area"
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        return f"box {[round(v, 1) for v in box]} lies outside the {width}x{height} image"
    return None


def clip_box(box: Sequence[float], width: int, height: int) -> list[float]:
    """``box`` clipped to the image (after :func:`box_problem` allowed its rounding slack)."""
    x1, y1, x2, y2 = box
    return [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]


def split_records(
    records: list[DenseRecord], val_fraction: float, seed: int = 0
) -> tuple[list[DenseRecord], list[DenseRecord]]:
    """A fixed random train/validation split of one annotated folder (seed 0: every run alike)."""
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1; got {val_fraction}")
    if len(records) < 2:
        raise DataError(f"need at least 2 annotated images to split; found {len(records)}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(records), generator=g).tolist()
    n_val = max(1, round(val_fraction * len(records)))
    return [records[i] for i in order[n_val:]], [records[i] for i in order[:n_val]]


def share_skipped(train: DenseDataset, test: DenseDataset) -> DatasetPair:
    """Both splits listing every skipped file (the run writes one ``skipped.txt``)."""
    both = train.skipped + [s for s in test.skipped if s not in train.skipped]
    train.skipped, test.skipped = both, list(both)
    return train, test


DatasetPair = tuple[DenseDataset, DenseDataset]
