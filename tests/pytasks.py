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
