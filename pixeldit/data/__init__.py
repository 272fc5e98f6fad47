"""Dataset preparation (ADM centre crop), the on-disk format, the embedded digits32 and the training loader.

    prepare_folder(src, out, resolution)    class folder or .tar → dataset directory
    prepare_digits32(out)                   the embedded dataset, splits "train" / "reference"
    open_dataset(path, split=None)          validated, memory-mapped ImageDataset
    ImageBatches(dataset, batch_size, seed, rank, world_size, flip, start_position)
"""
from pixeldit.infra.images import center_crop_arr
from pixeldit.data.digits import prepare_digits32
from pixeldit.data.folder import prepare_folder
from pixeldit.data.loader import ImageBatches, to_model_range
from pixeldit.infra.datasets import DatasetError, ImageDataset, open_dataset, read_manifest, verify_checksums

__all__ = ["center_crop_arr", "prepare_digits32", "prepare_folder", "ImageBatches", "to_model_range",
           "DatasetError", "ImageDataset", "open_dataset", "read_manifest", "verify_checksums"]
