"""Segment explorer: a Dash app over the gold tables (``python -m app``)."""
