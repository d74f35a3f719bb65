"""The test and bench harness: fault injection, benches, incremental checks, back-tests, the sample-data
generator and screenshots. It imports the product (``jobs``, ``app``); the product never imports it."""
