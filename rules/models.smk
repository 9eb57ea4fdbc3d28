rule model:
    """Materialize the configured model as an HF checkpoint directory (safetensors + tokenizer + config)."""
    input:
        fetched=ancient(L.fetched()),  # after the hub model is cached; a new fetch reruns nothing
    output:
        directory(L.model()),
    log:
        L.log("model", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("model")
    resources:
        **stage_resources("model"),
    params:
        model=PLAN.model_params(),
        code=script_code("model"),
    script:
        "../workflow_scripts/model.py"
