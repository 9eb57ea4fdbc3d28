rule model:
    """Materialize the configured model as an HF checkpoint directory (safetensors + tokenizer + config)."""
    output:
        directory(L.model()),
    log:
        L.log("model", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    resources:
        mem_mb=mem_mb(8000),
        runtime=30,
    params:
        model=PLAN.model_params(),
        code=script_code("model"),
    script:
        "../workflow_scripts/model.py"
