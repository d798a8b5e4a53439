"""TensorBoard scalars and images for a run, written by rank 0 only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


class RunLogger:
    """Thin wrapper over ``torch.utils.tensorboard.SummaryWriter`` (no-op when ``enabled`` is False)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.enabled = enabled
        self._writer = None
        self.log_dir = Path(run_dir) / "tb"

    @property
    def writer(self):
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for key, value in values.items():
            self.writer.add_scalar(key, float(value), step)

    def image(self, tag: str, image: Image.Image, step: int) -> None:
        if not self.enabled:
            return
        self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
