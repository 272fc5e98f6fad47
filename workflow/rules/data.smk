# Dataset preparation and reference statistics (built once, checksummed).


rule prepare_dataset:
    output:
        f"{RESULTS}/data/{config['dataset']['name']}/dataset.json",
    params:
        source=config["dataset"]["source"],
        res=config["dataset"]["resolution"],
        out=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        f"{RESULTS}/logs/prepare_dataset.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_dataset.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "pixeldit-bench data prepare {params.source} --out {params.out} --res {params.res} --overwrite > {log} 2>&1"


rule reference_statistics:
    input:
        rules.prepare_dataset.output,
    output:
        config["reference"]["file"],
    params:
        dataset=lambda wildcards, input: str(Path(input[0]).parent),
        split=config["reference"].get("split", "reference"),
        res=config["dataset"]["resolution"],
        features=features_args(),
    log:
        f"{RESULTS}/logs/reference_statistics.log",
    benchmark:
        f"{RESULTS}/benchmarks/reference_statistics.tsv"
    # Every evaluation waits on it, and with two threads it fits only when nothing else runs: first, before the
    # trainings take the cores (unprioritised, Snakemake ran it after the last training, one core idle ~4 minutes).
    priority: 10
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["resources"]["eval_gpus"],
    shell:
        "pixeldit-bench eval imagenet ref build {params.dataset} --split {params.split} --res {params.res} --out {output} "
        "{params.features} --overwrite > {log} 2>&1"
