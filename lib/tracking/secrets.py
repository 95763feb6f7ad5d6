"""Keep credentials out of everything the harness writes or sends to a tracker.

`redact(data)` drops keys that name a credential (api_key, token, secret,
password, ...) at any depth and replaces any string that contains the value
of such an environment variable (WANDB_API_KEY, HF_TOKEN, ...) with
"<redacted>". Trackers get their credentials from the environment or their
own login files, never from the harness's config.
"""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"(^|[_\-.])(api[_-]?key|token|secret|password|passwd|credentials?)($|[_\-.])", re.IGNORECASE)
REDACTED = "<redacted>"


def secret_values(environ=None) -> list[str]:
    """Values of environment variables whose names say they are credentials."""
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 8}, key=len, reverse=True)


def redact(data, environ=None):
    values = secret_values(environ)

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if not (isinstance(k, str) and SECRET_NAME.search(k))}
        if isinstance(x, (list, tuple)):
            return type(x)(clean(v) for v in x)
        if isinstance(x, str) and any(v in x for v in values):
            return REDACTED
        return x

    return clean(data)
