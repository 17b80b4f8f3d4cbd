# The comparison report. One self-contained page from every stage's outputs, a Markdown
# summary, and each figure as a PNG marked for Snakemake's own report (snakemake --report).


report: "../report/workflow.rst"


rule report:
    input:
        report_inputs,
    output:
        html="results/report/index.html",
        markdown=report(
            "results/report/summary.md",
            caption="../report/summary.rst",
            category="Summary",
        ),
        figures=report(
            directory("results/report/figures"),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="Figures",
        ),
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    resources:
        **needs("report"),
    params:
        config=config,
    script:
        "../../scripts/report.py"
