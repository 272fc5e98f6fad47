# Sampling fans out into shards (independent jobs, each resumable) and merges into ADM's samples.npz.


rule sample_shard:
    input:
        network=lambda wildcards: final_network(wildcards.run),
    output:
        sidecar_template(f"{RESULTS}/samples/{{run}}/{{kimg}}/{{sampler}}"),
    params:
        network=lambda wildcards: network_file(wildcards.run, wildcards.kimg),
        out=lambda wildcards: sample_dir(wildcards.run, wildcards.kimg, wildcards.sampler),
        shard=shard_id,
        n=SAMPLING["n"],
        shard_size=SAMPLING["shard_size"],
        seed=SAMPLING["seed"],
        batch=SAMPLING["batch_size"],
        res=config["dataset"]["resolution"],
        extra=SAMPLING.get("extra_args", ""),
        launch=lambda wildcards, resources: launcher(resources.gpu),
        omp=lambda wildcards, threads, resources: threads_per_process(threads, resources.gpu),
    log:
        f"{RESULTS}/logs/sample/{{run}}-{{kimg}}-{{sampler}}-{{first}}-{{last}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sample/{{run}}-{{kimg}}-{{sampler}}-{{first}}-{{last}}.tsv"
    threads: config["resources"]["sample_threads"]
    resources:
        gpu=config["resources"]["sample_gpus"],
        mem_mb=config["resources"]["sample_mem_mb"],
        runtime=config["resources"]["sample_runtime"],
        tasks_per_gpu=0,
    shell:
        "OMP_NUM_THREADS={params.omp} {params.launch} sample {params.network} --out {params.out} --n {params.n} "
        "--sampler {wildcards.sampler} --seed {params.seed} --resolution {params.res} --shard-size {params.shard_size} "
        "--shards {params.shard} --batch-size {params.batch} --no-merge {params.extra} > {log} 2>&1"


rule merge_samples:
    input:
        shard_files,
    output:
        npz=f"{RESULTS}/samples/{{run}}/{{kimg}}/{{sampler}}/samples.npz",
        card=f"{RESULTS}/samples/{{run}}/{{kimg}}/{{sampler}}/samples.json",
        grid=report(f"{RESULTS}/samples/{{run}}/{{kimg}}/{{sampler}}/samples-grid.png", category="Samples",
                    subcategory="{run}", labels={"run": "{run}", "kimg": "{kimg}", "sampler": "{sampler}"},
                    caption="../report/samples.rst"),
    params:
        out=lambda wildcards: sample_dir(wildcards.run, wildcards.kimg, wildcards.sampler),
        n=SAMPLING["n"],
    log:
        f"{RESULTS}/logs/sample/{{run}}-{{kimg}}-{{sampler}}-merge.log",
    benchmark:
        f"{RESULTS}/benchmarks/merge/{{run}}-{{kimg}}-{{sampler}}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "pixeldit-bench sample merge {params.out} --n {params.n} > {log} 2>&1"
