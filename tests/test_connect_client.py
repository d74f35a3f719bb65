"""A Spark Connect client gives up on an unreachable server within a bounded time.

pyspark's default retry policy keeps a client retrying for about 10 minutes, so a task whose
Connect server died would hold its Airflow slot that long before failing. ``connect_session``
installs ``spark.connect_max_retries`` / ``connect_max_backoff_seconds`` before its first call.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from pyspark.sql.connect.client.retries import DefaultPolicy, RetryPolicy

from jobs.adapters.spark import connect_retry_policy
from jobs.config import REPO_ROOT, load_settings

SHORT_BACKOFF_SECONDS = 2.0  # the server-less client's cap between retries, in the test and its subprocess

# Its own process: a Connect session marks the whole interpreter as remote (pyspark's is_remote).
CONNECT_WITHOUT_SERVER = """
import json, time, warnings
from jobs.adapters.spark import connect_session
from jobs.config import load_settings
warnings.simplefilter("ignore")
started = time.perf_counter()
try:
    connect_session(load_settings()).range(1).count()
    error = None
except Exception as failure:
    error = f"{type(failure).__name__}: {failure}"
print(json.dumps({"seconds": time.perf_counter() - started, "error": error}))
"""


def retry_budget_seconds(policy: RetryPolicy) -> float:
    """The longest a call can wait under ``policy`` before it gives up: every backoff at its
    maximum jitter (pyspark's ``RetryPolicyState.next_attempt``), server-sent delays aside."""
    waits, wait = [], float(policy.initial_backoff)
    for _ in range(policy.max_retries):
        waits.append(wait + (policy.jitter if wait >= policy.min_jitter_threshold else 0))
        wait = min(float(policy.max_backoff), wait * policy.backoff_multiplier)
    return sum(waits) / 1000


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_configured_retry_budget_is_seconds_where_pysparks_default_is_ten_minutes():
    policy = connect_retry_policy(load_settings())
    assert 10 <= retry_budget_seconds(policy) <= 60, "long enough for a server restart, short enough to fail fast"
    assert retry_budget_seconds(DefaultPolicy()) >= 600, "pyspark states its default tolerates at least 10 minutes"


def test_a_client_without_a_server_fails_within_the_retry_budget():
    """With the conf's retries and a shorter backoff (about 9 s instead of 26 s of CI time)."""
    settings = load_settings()
    spark_conf = settings.spark.model_copy(update={"connect_max_backoff_seconds": SHORT_BACKOFF_SECONDS})
    policy = connect_retry_policy(settings.model_copy(update={"spark": spark_conf}))
    budget = retry_budget_seconds(policy)
    env = {
        **os.environ,
        "RFM__SPARK__CONNECT_MAX_BACKOFF_SECONDS": str(SHORT_BACKOFF_SECONDS),
        "RFM__SPARK__REMOTE": f"sc://127.0.0.1:{unused_port()}",
    }
    done = subprocess.run(
        [sys.executable, "-c", CONNECT_WITHOUT_SERVER],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=budget + 120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["error"] and "UNAVAILABLE" in out["error"], out
    backoffs_without_jitter = retry_budget_seconds(
        DefaultPolicy(max_retries=policy.max_retries, max_backoff=policy.max_backoff, jitter=0)
    )
    assert out["seconds"] >= backoffs_without_jitter, f"it gave up before retrying {policy.max_retries} times: {out}"
    assert out["seconds"] <= budget + 15, f"it retried past the budget of {budget:.1f} s: {out}"
