"""Dataset preparation (ADM centre crop), the on-disk format, the embedded digits32 and the training loader.

    prepare_folder(src, out, resolution)    class folder or .tar → dataset directory
    prepare_digits32(out)                   the embedded dataset, splits "train" / "reference"
    open_dataset(path, split=None)          validated, memory-mapped ImageDataset
    ImageBatches(dataset, batch_size, seed, rank, world_size, flip, start_position)
    latent_cache.cache_latents / open_latent_cache    autoencoder latents of a split, for latent training
    captions.cached_caption_embeddings                text-encoder embeddings of class captions, for T2I training
"""
from pixeldit.data.digits import prepare_digits32
from pixeldit.data.folder import prepare_folder
from pixeldit.data.loader import ImageBatches
from pixeldit.infra.datasets import DatasetError, ImageDataset, open_dataset, read_manifest, verify_checksums
from pixeldit.infra.images import center_crop_arr, to_model_range

__all__ = ["center_crop_arr", "prepare_digits32", "prepare_folder", "ImageBatches", "to_model_range",
           "DatasetError", "ImageDataset", "open_dataset", "read_manifest", "verify_checksums"]
