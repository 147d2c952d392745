"""The local development stack: a real Kafka broker, a real S3 server and the GigaChat emulator.

Everything runs as plain processes on 127.0.0.1, provisioned on first use into a cache outside the
repository (Kafka jars from Maven Central, versitygw built with ``go install``). Used by
``llm-devstack``, ``make run`` and the test suite's session fixture.
"""
