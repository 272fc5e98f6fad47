# Latent baselines: an autoencoder trained in the same run, its latent cache, and its reconstruction FID
# (rFID bounds what a latent model can reach).


rule train_autoencoder:
    input:
        rules.prepare_dataset.output,
    output:
        f"{RESULTS}/latent/{{ae}}/autoencoder.safetensors",
    params:
        dataset=lambda wildcards, input: str(Path(input[0]).parent),
        out=lambda wildcards, output: str(Path(output[0]).parent),
        preset=lambda wildcards: AUTOENCODERS[wildcards.ae]["preset"],
        kimg=lambda wildcards: AUTOENCODERS[wildcards.ae]["kimg"],
    log:
        f"{RESULTS}/logs/latent/{{ae}}-train.log",
    benchmark:
        f"{RESULTS}/benchmarks/latent/{{ae}}-train.tsv"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpus"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    shell:
        "OMP_NUM_THREADS={threads} pixeldit-bench latent train-ae {params.dataset} --out {params.out} "
        "--preset {params.preset} --kimg {params.kimg} > {log} 2>&1"


rule cache_latents:
    input:
        dataset=rules.prepare_dataset.output,
        ae=rules.train_autoencoder.output,
    output:
        f"{RESULTS}/latent/{{ae}}-train/latents.json",
    params:
        dataset=lambda wildcards, input: str(Path(input.dataset[0]).parent),
        ae=lambda wildcards, input: str(Path(input.ae[0]).parent),
        out=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        f"{RESULTS}/logs/latent/{{ae}}-cache.log",
    benchmark:
        f"{RESULTS}/benchmarks/latent/{{ae}}-cache.tsv"
    threads: config["resources"]["sample_threads"]
    resources:
        gpu=config["resources"]["sample_gpus"],
        mem_mb=config["resources"]["sample_mem_mb"],
        runtime=config["resources"]["sample_runtime"],
    shell:
        "OMP_NUM_THREADS={threads} pixeldit-bench latent cache {params.dataset} --ae {params.ae} --out {params.out} "
        "--split train > {log} 2>&1"


rule reconstruct_reference:
    input:
        dataset=rules.prepare_dataset.output,
        ae=rules.train_autoencoder.output,
    output:
        f"{RESULTS}/latent/{{ae}}/reconstruction/samples.npz",
    params:
        dataset=lambda wildcards, input: str(Path(input.dataset[0]).parent),
        ae=lambda wildcards, input: str(Path(input.ae[0]).parent),
        split=config["reference"].get("split", "reference"),
    log:
        f"{RESULTS}/logs/latent/{{ae}}-reconstruct.log",
    benchmark:
        f"{RESULTS}/benchmarks/latent/{{ae}}-reconstruct.tsv"
    threads: config["resources"]["sample_threads"]
    resources:
        mem_mb=config["resources"]["sample_mem_mb"],
        runtime=config["resources"]["sample_runtime"],
    shell:
        "OMP_NUM_THREADS={threads} pixeldit-bench latent reconstruct {params.dataset} --ae {params.ae} "
        "--split {params.split} --out {output} > {log} 2>&1"


rule eval_reconstruction:
    input:
        samples=rules.reconstruct_reference.output,
        ref=config["reference"]["file"],
    output:
        f"{RESULTS}/metrics/{{ae}}/reconstruction/rfid/imagenet.json",
    params:
        dataset=config["dataset"]["name"],
    log:
        f"{RESULTS}/logs/eval/{{ae}}-rfid.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{ae}}-rfid.tsv"
    threads: config["resources"]["eval_threads"]
    resources:
        gpu=config["resources"]["eval_gpus"],
        mem_mb=config["resources"]["eval_mem_mb"],
        runtime=config["resources"]["eval_runtime"],
    shell:
        "OMP_NUM_THREADS={threads} pixeldit-bench eval imagenet {input.samples} --ref {input.ref} "
        "--label group=autoencoder --label variant={wildcards.ae}-rFID --label dataset={params.dataset} "
        "--out {output} > {log} 2>&1"
