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
    params:
        results=RESULTS,
        out=f"{RESULTS}/report",
        mixed="--allow-mixed" if config.get("report", {}).get("allow_mixed") else "",
    log:
        f"{RESULTS}/logs/report.log",
    threads: 1
    shell:
        "pixeldit-bench report --results {params.results} --out {params.out} {params.mixed} > {log} 2>&1"
