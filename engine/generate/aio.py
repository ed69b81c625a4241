"""Running a coroutine from synchronous code: the endpoint generator's and the LLM judge's async calls behind their
plain `generate()`, also when the caller is itself inside a running event loop (a notebook, an async server).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


def run_sync(coroutine: Any) -> Any:
    """Run a coroutine to completion, also from code already inside an event loop (then in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
