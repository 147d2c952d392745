"""``llmctl``: the operator's and the submitter's command line, and the Python submission API.

* ``llmctl submit`` / ``llmctl wait`` and :class:`llmctl.api.TaskClient`: send tasks to Kafka (inputs
  to S3 first) and follow the status topic to each task's final status;
* the supervisor's commands (status, health, reload, scale, drain, resume) over its status socket.

Runs in its own short-lived process; creates its Kafka and S3 clients on first use.
"""
