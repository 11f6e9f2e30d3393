"""What a task can ask of its request beyond ``self.request``: the message's ``delivery_info``,
``raise Ignore()``, ``raise Reject(requeue=True)`` and ``self.add_to_chord(sig)`` — through the
contract's ``host.delivery-info`` / ``host.ignore`` / ``host.reject`` and ``canvas.add-to-chord``.
The Python stand-in has the same tasks written as Celery users write them (tests/standin_tasks.py)."""

from celery import chain, chord

from conftest import wait_until

GRANT = '[task_annotations."*"]\nsend_tasks = true\n'


def test_a_task_reads_its_delivery_info(worker, client):
    worker()
    info = client.app.send_task("tasks.where_from").get(timeout=30)
    assert (info["exchange"], info["routing_key"], info["redelivered"]) == ("", "celery", False), info


def test_an_ignored_task_stores_nothing(worker, client):
    w = worker()
    r = client.app.send_task("tasks.ignored")
    w.wait_for_log(rf"Task tasks\.ignored\[{r.id}\] ignored", timeout=30)
    # Still nothing after the worker is done with it (a later task has finished).
    assert client.add.delay(1, 1).get(timeout=30) == 2
    assert client.redis.meta(r.id) is None


def test_a_rejected_late_ack_task_goes_back_to_its_queue_and_runs_again(worker, client):
    w = worker()
    r = client.app.send_task("tasks.bounce")
    assert r.get(timeout=60) == "redelivered"
    # Received twice: rejected with requeue the first time, run the second.
    wait_until(lambda: w.count(rf"Task tasks\.bounce\[{r.id}\] received") == 2, 10, message="two deliveries")


def test_a_chord_member_adds_a_task_to_its_chord(worker, client):
    worker(config=GRANT, concurrency=2)
    result = chord([client.add.s(1, 1), client.app.signature("tasks.grow_chord", args=(5,))])(client.xsum.s())
    # add(1, 1) + grow_chord(5) + the added add(5, 100).
    assert result.get(timeout=60) == 2 + 5 + 105


def test_a_chain_step_goes_to_the_queue_its_task_declares(worker, client):
    """``@task(queue="slow")``: what the worker sends to that task (here a chain's second step, which the
    client sends with no queue) goes to ``slow``, as a Celery worker sends it by the task's own option."""
    worker(queues="celery,slow")
    result = chain(client.add.si(1, 1), client.app.signature("tasks.routed", immutable=True))()
    assert result.get(timeout=30) == "slow"
