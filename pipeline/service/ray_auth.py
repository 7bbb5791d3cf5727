"""A client for Ray's job API that sends the cluster's token.

Ray 2.60 turns token authentication on when ``ray start`` starts a head, and its clients send
the token (``~/.ray/auth_token``) only when ``RAY_AUTH_MODE=token`` is set in their own
environment. The service sets it for itself when that file exists, so that neither users nor
Serve replicas have to.
"""

from __future__ import annotations

import os
from pathlib import Path


def job_client(address: str):
    if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_MODE"] = "token"
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)
