# Evaluation: one result JSON (values + protocol card) per samples.npz and evaluator.


rule eval_imagenet:
    input:
        samples=rules.merge_samples.output.npz,
        ref=config["reference"]["file"],
    output:
        report(f"{RESULTS}/metrics/{{run}}/{{kimg}}/{{sampler}}/imagenet.json", category="Metrics",
               subcategory="{run}", labels={"run": "{run}", "kimg": "{kimg}", "sampler": "{sampler}",
                                            "evaluator": "imagenet"}, caption="../report/metrics.rst"),
    params:
        labels=lambda wildcards: labels(wildcards.run),
        n=SAMPLING["n"],
        features=features_args(),
        omp=lambda wildcards, threads, resources: threads_per_process(threads, resources.gpu),
    log:
        f"{RESULTS}/logs/eval/{{run}}-{{kimg}}-{{sampler}}-imagenet.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{run}}-{{kimg}}-{{sampler}}-imagenet.tsv"
    threads: config["resources"]["eval_threads"]
    resources:
        gpu=config["resources"]["eval_gpus"],
        mem_mb=config["resources"]["eval_mem_mb"],
        runtime=config["resources"]["eval_runtime"],
    shell:
        "OMP_NUM_THREADS={params.omp} pixeldit-bench eval imagenet {input.samples} --ref {input.ref} "
        "--expected-samples {params.n} {params.features} {params.labels} --out {output} > {log} 2>&1"


rule eval_registered:
    input:
        samples=rules.merge_samples.output.npz,
    output:
        report(f"{RESULTS}/metrics/{{run}}/{{kimg}}/{{sampler}}/{{evaluator}}.json", category="Metrics",
               subcategory="{run}", labels={"run": "{run}", "kimg": "{kimg}", "sampler": "{sampler}",
                                            "evaluator": "{evaluator}"}, caption="../report/metrics.rst"),
    wildcard_constraints:
        evaluator="|".join(REGISTERED_EVALUATORS) or "(?!)",   # (?!) matches nothing: none registered
    log:
        f"{RESULTS}/logs/eval/{{run}}-{{kimg}}-{{sampler}}-{{evaluator}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{run}}-{{kimg}}-{{sampler}}-{{evaluator}}.tsv"
    shell:
        "pixeldit-bench eval {wildcards.evaluator} {input.samples} --out {output} > {log} 2>&1"
