"""Operator commands around the pipeline: backfill, re-run, replay, split, summary, compare (``python -m jobs.ops.<command>``)."""
