"""The worker process: consume a task from Kafka, run it against GigaChat, publish the outcome, commit.

Runs in a process forked by the supervisor (``llm_worker.process.run_worker``) or on its own
(``llm-worker``). Importing this package opens no connection and starts no thread, so the
supervisor may import it before forking; every client is created inside the worker process.

Which thread runs what:

* the consumer thread (the process's main thread): ``process.py``, ``consumer_loop.py``,
  ``offsets.py`` - it alone polls, pauses, resumes and commits;
* task threads (a thread pool): ``pipeline.py`` with ``task_message.py``, ``decoding.py``,
  ``storage.py``, ``events.py`` and the GigaChat client in ``gigachat/``;
* kafka-python's IO thread: the rebalance listener in ``rebalance.py``.
"""
