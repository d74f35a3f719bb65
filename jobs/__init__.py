"""RFM segmentation pipeline: every step importable, testable, and runnable with a run date."""
