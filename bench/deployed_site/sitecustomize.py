"""Hides packages that the dev venv has but the deployed function does not (cold-start runs only).

google-genai imports aiohttp when it is installed, and httpx2/gunicorn pick up h2 the same way;
none of them is in the closure of functions/requirements.txt, so a cold start measured with them
present would pay for imports production never does. Put this folder on PYTHONPATH to hide them.
"""

import sys
from importlib.abc import MetaPathFinder

HIDDEN = ("aiohttp", "h2", "pygments")


class _Hide(MetaPathFinder):
    def find_spec(self, name, path=None, target=None) -> None:  # noqa: ANN001
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: not deployed)", name=name)
        return None


sys.meta_path.insert(0, _Hide())
