"""Latent-space baselines: autoencoders (SD VAE, a small one for digits32), latent caching, matched compute.

    load_autoencoder("sd-vae-ft-ema" | path)          LatentAutoencoder: encode uint8 NHWC -> latents, decode back
    train_autoencoder(dataset, out, kimg)             the small AE of the embedded default, resumable (AUTOENCODER_PRESETS)
    cache_latents(dataset, split, autoencoder, out)   chunked, resumable latent shards; open_latent_cache(out)
    reconstruct(autoencoder, dataset)                 encode -> decode, for rFID
    training_flops / sampling_flops / matched_kimg    FID-vs-compute bookkeeping for latent and pixel models
"""
from pixeldit.latent.ae_training import train_autoencoder
from pixeldit.latent.autoencoder import (SD_VAE, SD_VAE_SCALE, LatentAutoencoder, load_autoencoder, reconstruct,
                                         save_autoencoder)
from pixeldit.latent.cache import CacheMismatchError, LatentDataset, cache_latents, open_latent_cache
from pixeldit.latent.compute import decoder_flops, forward_flops, matched_kimg, sampling_flops, training_flops

__all__ = ["train_autoencoder", "SD_VAE", "SD_VAE_SCALE", "LatentAutoencoder", "load_autoencoder", "reconstruct",
           "save_autoencoder", "CacheMismatchError", "LatentDataset", "cache_latents", "open_latent_cache",
           "decoder_flops", "forward_flops", "matched_kimg", "sampling_flops", "training_flops"]
