"""The supervisor: one parent process that forks, watches, limits and replaces the worker processes.

Every module here runs in the supervisor process only, except :mod:`supervisor.spawn`'s child half
(between ``os.fork`` and ``os._exit``) and :mod:`supervisor.lag_probe`, which runs as its own
short-lived process. The parent holds no threads and no Kafka, S3 or HTTP clients, so forking is
always safe (docs/architecture.md, "Conventions").
"""
