"""`recipe serve MODEL_OR_RUN`: an OpenAI-compatible server for a model or a run's output."""

from __future__ import annotations

import click

from engine.cli.main import cli, handle_errors


@cli.command("serve")
@click.argument("model_or_run")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: a free one).")
@click.option("--engine", type=click.Choice(["auto", "transformers", "vllm"]), default="auto", show_default=True,
              help="Generation engine: auto is vLLM where importable, else transformers.")
@click.option("--name", help="Model name the API reports (default: the model's name or directory).")
@click.option("--batch-size", default=16, show_default=True, type=int, help="Requests generated together.")
@handle_errors
def serve_cmd(model_or_run: str, host: str, port: int, engine: str, name: str | None, batch_size: int) -> None:
    """Serve MODEL_OR_RUN over an OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions).

    \b
    MODEL_OR_RUN is a run directory (its output model), a model or LoRA adapter directory, a .gguf file,
    a model block as JSON ('{"source": "tiny"}') or YAML file, or a hub id. Prompts go through the model's
    chat template exactly as in `collect` and `evaluate`, so an endpoint evaluation of the served model
    matches an in-process one.

    \b
      recipe serve runs/sft/20260101-abcd --port 8000
      recipe run my_eval.yaml --set model.url=http://127.0.0.1:8000/v1
    """
    from engine.generate.serve import model_from_arg, serve

    serve(model_from_arg(model_or_run), host=host, port=port, engine=engine, name=name, batch_size=batch_size,
          echo=click.echo)
