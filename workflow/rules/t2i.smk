# Text-to-image: import the released checkpoint or train a small model -> generate each evaluator's prompt set
# in shards -> check / merge -> score. Selected by the config's `t2i` section (workflow/config/t2i*.yaml).
# Each evaluator scores one prompt set: geneval -> GenEval's 553 prompts, dpg -> DPG-Bench's 1,065 prompts,
# imagenet (FID & co. against the dataset's reference) and digits (prompt following) -> the digit captions.

T2I = config.get("t2i", {})
T2I_RUNS = T2I.get("runs", {})
T2I_PROMPTS = {"geneval": "geneval", "dpg": "dpg", "imagenet": "digits", "digits": "digits"}
# Prompt counts, so the DAG knows the shards before anything runs: from each benchmark's task spec.
T2I_PROMPT_COUNTS = {name: load_task(name)["prompt_count"] for name in ("geneval", "dpg", "digits")}

if T2I and "dataset" not in config:
    needs = sorted({"imagenet", "digits"} & set(T2I["evaluators"])) + [f"run {r}" for r in T2I_RUNS if "preset" in T2I_RUNS[r]]
    if needs:
        raise ValueError(f"the t2i section's {', '.join(needs)} need the config's `dataset` and `reference` "
                         f"(see workflow/config/t2i-demo.yaml)")


def t2i_kimg(run):
    return int(T2I_RUNS[run].get("kimg", 0))


def t2i_network(run):
    if "checkpoint" in T2I_RUNS[run]:
        return f"{RESULTS}/imported/t2i/{run}.safetensors"
    return f"{RESULTS}/t2i/runs/{run}/network-snapshot-{t2i_kimg(run):07d}.safetensors"


def t2i_sample_dir(run, prompts, sampler):
    return f"{RESULTS}/t2i/samples/{run}/{prompts}/{sampler}"


def t2i_shard_sidecars(wildcards):
    directory = t2i_sample_dir(wildcards.run, wildcards.prompts, wildcards.sampler)
    return shard_sidecars(directory, T2I_PROMPT_COUNTS[wildcards.prompts], T2I["shard_size"])


def t2i_samples_per_prompt(prompts):
    """GenEval and DPG fix 4 per prompt; a caption set takes the config's count."""
    fixed = load_task(prompts).get("samples_per_prompt") if prompts in ("geneval", "dpg") else None
    return fixed or T2I.get("samples_per_prompt", 4)


def t2i_metric_files():
    return [f"{RESULTS}/metrics/t2i/{run}/{t2i_kimg(run):07d}/{T2I['sampler']}/{evaluator}.json"
            for run in T2I_RUNS for evaluator in T2I.get("evaluators", [])]


def t2i_scored_samples(wildcards):
    """samples.json of the prompt set the evaluator scores (+ the reference statistics for imagenet)."""
    card = f"{t2i_sample_dir(wildcards.run, T2I_PROMPTS[wildcards.evaluator], wildcards.sampler)}/samples.json"
    return [card, config["reference"]["file"]] if wildcards.evaluator == "imagenet" else [card]


def t2i_eval_command(wildcards, input, output):
    directory = str(Path(input[0]).parent)
    if wildcards.evaluator == "geneval":
        return f"pixeldit-bench eval geneval {directory} --out {output[0]}"
    if wildcards.evaluator == "dpg":
        return f"pixeldit-bench eval dpg {directory} --out {output[0]}"
    if wildcards.evaluator == "digits":
        return (f"pixeldit-bench eval digits {directory}/samples.npz --dataset "
                f"{RESULTS}/data/{config['dataset']['name']} --out {output[0]}")
    count = T2I_PROMPT_COUNTS[T2I_PROMPTS["imagenet"]] * t2i_samples_per_prompt(T2I_PROMPTS["imagenet"])
    return (f"pixeldit-bench eval imagenet {directory}/samples.npz --ref {input[1]} --expected-samples {count} "
            f"--label name={wildcards.run} --label variant={wildcards.run} --label dataset={config['dataset']['name']} "
            f"--out {output[0]}")


wildcard_constraints:
    prompts="geneval|dpg|digits",
    evaluator="geneval|dpg|imagenet|digits",


rule t2i_import:
    output:
        f"{RESULTS}/imported/t2i/{{run}}.safetensors",
    params:
        checkpoint=lambda wildcards: T2I_RUNS[wildcards.run]["checkpoint"],
        res=lambda wildcards: T2I_RUNS[wildcards.run].get("resolution", 1024),
    log:
        f"{RESULTS}/logs/t2i/import-{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/t2i/import-{{run}}.tsv"
    threads: 1
    resources:
        mem_mb=32000,
        runtime=30,
    shell:
        "pixeldit-bench weights import t2i {params.checkpoint} {output} --resolution {params.res} > {log} 2>&1"


rule t2i_train:
    input:
        f"{RESULTS}/data/{config.get('dataset', {}).get('name', 'none')}/dataset.json",
    output:
        f"{RESULTS}/t2i/runs/{{run}}/network-snapshot-{{kimg}}.safetensors",
    params:
        preset=lambda wildcards: T2I_RUNS[wildcards.run]["preset"],
        seed=lambda wildcards: T2I_RUNS[wildcards.run].get("seed", 0),
        kimg=lambda wildcards: int(wildcards.kimg),
        dataset=lambda wildcards, input: str(Path(input[0]).parent),
        out=lambda wildcards: f"{RESULTS}/t2i/runs/{wildcards.run}",
        launch=lambda wildcards, resources: launcher(resources.gpu),
        omp=lambda wildcards, threads, resources: threads_per_process(threads, resources.gpu),
    log:
        f"{RESULTS}/logs/t2i/train-{{run}}-{{kimg}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/t2i/train-{{run}}-{{kimg}}.tsv"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["train_gpus"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
        tasks_per_gpu=0,
    shell:
        "OMP_NUM_THREADS={params.omp} {params.launch} train {params.preset} --seed {params.seed} --kimg {params.kimg} "
        "--dataset {params.dataset} --out {params.out} > {log} 2>&1"


rule t2i_generate_shard:
    input:
        network=lambda wildcards: t2i_network(wildcards.run),
    output:
        sidecar_template(f"{RESULTS}/t2i/samples/{{run}}/{{prompts}}/{{sampler}}"),
    params:
        out=lambda wildcards: t2i_sample_dir(wildcards.run, wildcards.prompts, wildcards.sampler),
        shard=lambda wildcards: int(wildcards.first) // T2I["shard_size"],
        per_prompt=lambda wildcards: t2i_samples_per_prompt(wildcards.prompts),
        shard_size=T2I.get("shard_size", 1),
        seed=T2I.get("seed", 0),
        batch=T2I.get("batch_size", 1),
        extra=T2I.get("extra_args", ""),
        omp=lambda wildcards, threads, resources: threads_per_process(threads, resources.gpu),
    log:
        f"{RESULTS}/logs/t2i/{{run}}-{{prompts}}-{{sampler}}-{{first}}-{{last}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/t2i/{{run}}-{{prompts}}-{{sampler}}-{{first}}-{{last}}.tsv"
    threads: config["resources"]["sample_threads"]
    resources:
        gpu=config["resources"]["sample_gpus"],
        mem_mb=config["resources"]["sample_mem_mb"],
        runtime=config["resources"]["sample_runtime"],
    shell:
        "OMP_NUM_THREADS={params.omp} pixeldit-bench t2i generate {input.network} --out {params.out} "
        "--prompts {wildcards.prompts} --sampler {wildcards.sampler} --seed {params.seed} "
        "--samples-per-prompt {params.per_prompt} --shard-size {params.shard_size} --shards {params.shard} "
        "--batch-size {params.batch} {params.extra} > {log} 2>&1"


rule t2i_finish:
    input:
        t2i_shard_sidecars,
    output:
        f"{RESULTS}/t2i/samples/{{run}}/{{prompts}}/{{sampler}}/samples.json",
    params:
        out=lambda wildcards: t2i_sample_dir(wildcards.run, wildcards.prompts, wildcards.sampler),
    log:
        f"{RESULTS}/logs/t2i/{{run}}-{{prompts}}-{{sampler}}-finish.log",
    benchmark:
        f"{RESULTS}/benchmarks/t2i/{{run}}-{{prompts}}-{{sampler}}-finish.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "pixeldit-bench t2i finish {params.out} > {log} 2>&1"


rule t2i_eval:
    input:
        t2i_scored_samples,
    output:
        f"{RESULTS}/metrics/t2i/{{run}}/{{kimg}}/{{sampler}}/{{evaluator}}.json",
    params:
        command=t2i_eval_command,
    log:
        f"{RESULTS}/logs/t2i/eval-{{run}}-{{kimg}}-{{sampler}}-{{evaluator}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/t2i/eval-{{run}}-{{kimg}}-{{sampler}}-{{evaluator}}.tsv"
    threads: config["resources"]["eval_threads"]
    resources:
        gpu=config["resources"]["eval_gpus"],
        mem_mb=config["resources"]["eval_mem_mb"],
        runtime=config["resources"]["eval_runtime"],
    shell:
        "OMP_NUM_THREADS={threads} {params.command} > {log} 2>&1"
