"""The bottom layer: what every other part uses and that imports nothing else of the project.

    files     atomic writes (bytes, JSON, torch, npz, streamed npz), sha256, disk-space checks
    results   the result-JSON format (schema, protocol card, environment)
    datasets  the on-disk dataset format (uint8 shards + checksummed manifest)
    runs      a training run directory's layout (snapshots, resumable states)
    images    ADM's centre crop and float -> uint8 quantisation
    devices   device, rank and process-group resolution
    weights   the registry of external weight files (fetch, verify, import)
    torchvision_shim  lets PyPI's torchvision import beside the CPU torch wheel
"""
