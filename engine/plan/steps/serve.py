"""The `serve` step executor: serve a model over an OpenAI-compatible HTTP API for the steps after it.

The server (engine/generate/serve.py, the same code as `recipe serve`) runs in a background thread of the
run and is stopped when the run ends; its own generator is kept out of the step-shared pool, so a later step
loading another model never closes the engine behind a live endpoint. The Endpoint artifact's fingerprint
is the served model's, not the URL's: an evaluation through a fresh server on another port is still a cache
hit. A served endpoint is not a result: the executor re-runs `serve` steps on resume and never caches them.

Output: `steps/<id>/endpoint.json` (or the step's `save:`: url, model name, engine); an Endpoint artifact.
"""

from __future__ import annotations

from engine.plan.context import StepContext
from engine.runs.atomic import atomic_write_json

SERVERS_KEY = "servers"


def run(ctx: StepContext) -> dict[str, dict]:
    from engine.generate.engines import open_generator
    from engine.generate.serve import ModelServer, display_name
    from engine.models.resolve import as_model_artifact

    model = as_model_artifact(ctx.param("model"), ctx.recipe_dir)
    generator = open_generator(model, generator=ctx.param("engine", "auto"), recipe_dir=ctx.recipe_dir,
                               cache=False, progress=False)
    try:
        server = ModelServer(generator, display_name(model), host=ctx.param("host", "127.0.0.1"),
                             port=ctx.param("port") or 0).start()
    except OSError as exc:
        generator.close()
        from engine.recipe.errors import EngineError

        raise EngineError(f"serve: cannot listen on {ctx.param('host')}:{ctx.param('port')} ({exc}); "
                          f"choose another `port:` or leave it out for a free one") from None
    ctx.resources.setdefault(SERVERS_KEY, []).append((server, generator))
    endpoint = server.endpoint_artifact()
    endpoint["fingerprint"] = f"served:{model.get('fingerprint') or model.get('path')}"
    atomic_write_json(ctx.step_dir / (ctx.save_name or "endpoint.json"), {"url": server.url, "model": server.model_name,
                                                        "engine": generator.name, "served": model.get("path")})
    ctx.emit("serving", url=server.url, model=server.model_name, engine=generator.name)
    return {"endpoint": endpoint}


def stop_servers(resources: dict) -> None:
    """Stop every server a run's `serve` steps started (the executor calls this when the run ends)."""
    for server, generator in reversed(resources.pop(SERVERS_KEY, [])):
        server.stop()
        generator.close()
