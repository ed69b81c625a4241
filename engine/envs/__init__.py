"""Side environments (axolotl, vllm): managed venvs in the engine's cache, created by `recipe env create NAME`."""

SIDE_ENVS = {"axolotl": "engine.envs.axolotl"}
