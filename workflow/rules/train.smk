# Training. The output is the final network snapshot, a sentinel: never the run folder, so the
# training-state files of a failed job survive and rerunning the rule resumes from them.


rule train:
    input:
        train_inputs,
    output:
        f"{RESULTS}/runs/{{run}}/network-snapshot-{{kimg}}.safetensors",
    params:
        preset=lambda wildcards: RUNS[wildcards.run]["preset"],
        seed=lambda wildcards: RUNS[wildcards.run].get("seed", 0),
        kimg=lambda wildcards: int(wildcards.kimg),
        dataset=lambda wildcards, input: str(Path(input[0]).parent),
        out=lambda wildcards: f"{RESULTS}/runs/{wildcards.run}",
        overrides=lambda wildcards: " ".join([*(f"--set {k}={v}" for k, v in RUNS[wildcards.run].get("set", {}).items()),
                                              latent_override(wildcards.run)]),
        launch=lambda wildcards, resources: launcher(resources.gpu),
        omp=lambda wildcards, threads, resources: threads_per_process(threads, resources.gpu),
    log:
        f"{RESULTS}/logs/train/{{run}}-{{kimg}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}-{{kimg}}.tsv"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpus"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
        tasks_per_gpu=0,
    shell:
        "OMP_NUM_THREADS={params.omp} {params.launch} train {params.preset} --seed {params.seed} --kimg {params.kimg} "
        "--dataset {params.dataset} --out {params.out} {params.overrides} > {log} 2>&1"


rule import_official:
    output:
        f"{RESULTS}/imported/{{run}}.safetensors",
    params:
        checkpoint=lambda wildcards: RUNS[wildcards.run]["checkpoint"],
    log:
        f"{RESULTS}/logs/import/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/import/{{run}}.tsv"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=30,
    shell:
        "pixeldit-bench weights import c2i {params.checkpoint} {output} > {log} 2>&1"
