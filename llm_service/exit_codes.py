"""Exit codes of a worker process, read by the supervisor to tell "could not boot" from "died running".

Gunicorn uses the same split (WORKER_BOOT_ERROR) to stop crash loops instead of forking forever.
"""

OK = 0  # drained and stopped on request
CRASHED = 1  # an unexpected error while running (also Python's default for an uncaught exception)
CONFIG_ERROR = 2  # the configuration was rejected; restarting will not help until it changes
BOOT_FAILED = 3  # could not reach Kafka, S3 or GigaChat within the bootstrap attempts
FENCED = 4  # the broker fenced our group_instance_id: another process holds this slot's identity

# The supervisor's own exit codes (besides 0, 1 and CONFIG_ERROR); docs/supervisor.md lists them.
INSTANCE_CONFLICT = 5  # another live supervisor holds WORKER_INSTANCE_PREFIX in the consumer group
