"""Side environments (axolotl, vllm): managed venvs in the engine's cache, created by `recipe env create NAME`.

Each module has `env_dir()`, `locate()` (its python, or an error saying how to build it), `create(force, echo)`
and `versions()` (for the run lock).
"""

SIDE_ENVS = {"axolotl": "engine.envs.axolotl", "vllm": "engine.envs.vllm"}
