"""Soft time limits: Celery raises ``SoftTimeLimitExceeded`` inside a Python task at its soft limit; a
wasm guest cannot be interrupted that way, so it reads what is left (``soft_time_left``) and stops itself.
Either way the client sees the same: a partial result, or Celery's ``SoftTimeLimitExceeded``. These
tests pass against a real (prefork) Python worker in stand-in mode too."""

import pytest
from celery.exceptions import SoftTimeLimitExceeded


def test_a_task_observes_its_soft_time_limit_and_answers_with_a_partial_result(worker, client):
    worker()
    # soft_time_limit from the client (the message's timelimit header).
    r = client.app.send_task("tasks.crunch", args=(20,), soft_time_limit=0.5)
    answer = r.get(timeout=30)
    assert answer["partial"] is True, answer
    # Without a soft limit the same task runs to its end.
    assert client.app.send_task("tasks.crunch", args=(0.2,)).get(timeout=30)["partial"] is False


def test_a_soft_time_limit_from_task_annotations_applies_too(worker, client):
    worker(config='[task_annotations."tasks.crunch"]\nsoft_time_limit = 0.5\n')
    assert client.app.send_task("tasks.crunch", args=(20,)).get(timeout=30)["partial"] is True


def test_a_task_that_gives_up_at_its_soft_limit_raises_celerys_soft_time_limit_exceeded(worker, client):
    worker()
    with pytest.raises(SoftTimeLimitExceeded):
        client.app.send_task("tasks.give_up", soft_time_limit=0.5).get(timeout=30)
