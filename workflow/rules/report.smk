# Tables and plots from the result JSON alone (cheap: runs on the submitting node).


localrules:
    report,


rule report:
    input:
        metric_files(),
        rfid_files(),
        t2i_metric_files(),
    output:
        f"{RESULTS}/report/report.md",
        report(directory(f"{RESULTS}/report/plots"), patterns=["{name}.png"], category="Plots",
               caption="../report/plots.rst"),
        report(directory(f"{RESULTS}/report/tables"), patterns=["{name}.csv"], category="Tables",
               caption="../report/tables.rst"),
    params:
        results=RESULTS,
        out=f"{RESULTS}/report",
        mixed="--allow-mixed" if config.get("report", {}).get("allow_mixed") else "",
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    threads: 1
    shell:
        "pixeldit-bench report --results {params.results} --out {params.out} {params.mixed} > {log} 2>&1"
