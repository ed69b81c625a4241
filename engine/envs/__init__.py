"""Side environments (axolotl, vllm): managed venvs in the engine's cache, created by `recipe env create NAME`.

Each module has `env_dir()`, `locate()` (its python, or an error saying how to build it), `create(force, echo)`
and `versions()` (for the run lock); what they share (the venv, installing recipe-engine in it, building it,
reading its versions) is in `engine.envs.venv`.
"""

SIDE_ENVS = {"axolotl": "engine.envs.axolotl", "vllm": "engine.envs.vllm"}
