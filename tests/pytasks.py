"""Tasks of the *Python* Celery worker that shares Redis with Celeriac.

Started by the ``python_worker`` fixture as
``celery -A pytasks -b <url> --result-backend <url> worker --pool=solo -Q py``.
"""
from celery import Celery

app = Celery("pytasks")
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])


@app.task(name="pytasks.hello")
def hello(name):
    return f"hello {name}"


@app.task(name="tasks.flaky", bind=True, max_retries=3, default_retry_delay=1)
def flaky(self, n, countdown=None):
    """The same task as the Celeriac example's ``tasks.flaky``: retries until retried ``n`` times
    (tests/test_retries.py hands its retries from one worker kind to the other)."""
    if self.request.retries < n:
        exc = ValueError("flaky: attempt %d of %d" % (self.request.retries + 1, n + 1))
        raise self.retry(exc=exc, countdown=0.1 if countdown is None else countdown)
    return self.request.retries
