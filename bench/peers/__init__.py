"""The loops people write by hand with kafka-python, measured against the service by ``bench.run``.

Both do the service's work per task (S3 input -> model -> S3 result -> status events) with the plain
libraries and none of the service's guarantees: auto-commit, no retries, no dead letters.
"""
