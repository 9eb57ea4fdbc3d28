rule model:
    """Materialize the configured model as an HF checkpoint directory (safetensors + tokenizer + config)."""
    output:
        directory("results/models/{model}"),
    log:
        "logs/model/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        model=model_params(),
        code=code_hash("clueflow.models"),
    script:
        "../workflow_scripts/model.py"
