"""Who may send work: Celery's message signing (``task_serializer = "auth"``).

A stock Celery client configured with ``app.setup_security()`` signs every
task with its private key; a worker with ``accept_content = ["auth"]`` runs
only tasks whose signature verifies against its certificate store, and
refuses (logs, never runs, stores nothing) unsigned, unknown-signer and
tampered messages. Keys and captures: tests/fixtures/auth (README there).
"""

import base64
import json
import re
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import CELERIAC_BIN, STANDIN, _base_env, wait_until

AUTH = __import__("pathlib").Path(__file__).parent / "fixtures" / "auth"


@pytest.fixture
def store(tmp_path):
    """A certificate store trusting only the producer's certificate."""
    d = tmp_path / "store"
    d.mkdir()
    shutil.copy(AUTH / "cert.pem", d / "producer.pem")
    return d


def worker_config(store) -> str:
    return (
        'task_serializer = "auth"\n'
        'accept_content = ["auth"]\n'
        f'security_key = "{AUTH / "key.pem"}"\n'
        f'security_certificate = "{AUTH / "cert.pem"}"\n'
        f'security_cert_store = "{store}/*.pem"\n'
    )


def signing_client(celery_app, store, key="key.pem", cert="cert.pem"):
    c = celery_app("auth", accept_content=["auth"], result_accept_content=["json"],
                   security_key=str(AUTH / key), security_certificate=str(AUTH / cert),
                   security_cert_store=f"{store}/*.pem")
    c.app.setup_security()
    return c


def never_ran(w, redis_server, task_id):
    time.sleep(1.0)
    assert not re.search(rf"\[{task_id}\] (succeeded|received)", w.log_text())
    assert redis_server.meta(task_id) is None, "a refused message must not write a result"


@pytest.mark.timeout(90)
def test_a_task_signed_by_a_trusted_celery_client_runs(worker, celery_app, store):
    worker(config=worker_config(store))
    c = signing_client(celery_app, store)
    assert c.add.delay(2, 2).get(timeout=30) == 4


@pytest.mark.timeout(90)
def test_the_tasks_a_worker_sends_itself_are_signed_so_a_chain_completes(worker, celery_app, store):
    """The chain's second step is published by the worker: the worker only
    accepts signed tasks, so the step runs only if the worker signed it."""
    worker(config=worker_config(store))
    c = signing_client(celery_app, store)
    assert (c.add.s(2, 2) | c.add.s(4)).delay().get(timeout=30) == 8


@pytest.mark.timeout(90)
def test_an_unsigned_task_is_refused_logged_and_never_run(worker, celery_app, store, redis_server):
    w = worker(config=worker_config(store))
    plain = celery_app()  # a JSON client: no signature
    r = plain.add.delay(2, 2)
    w.wait_for_log(r"(?i)refusing to deserialize untrusted content of type (application/)?json"
                   r"|refusing to deserialize content of type `application/json`", timeout=30)
    never_ran(w, redis_server, r.id)


@pytest.mark.timeout(90)
def test_a_task_signed_by_an_untrusted_key_is_refused_logged_and_never_run(worker, celery_app, store, redis_server):
    w = worker(config=worker_config(store))
    # The intruder trusts itself, so its client signs happily; the worker's store does not list it.
    own = store.parent / "intruder-store"
    own.mkdir()
    shutil.copy(AUTH / "untrusted-cert.pem", own / "intruder.pem")
    intruder = signing_client(celery_app, own, key="untrusted-key.pem", cert="untrusted-cert.pem")
    r = intruder.add.delay(2, 2)
    w.wait_for_log(r"(?i)unknown certificate: .*intruder", timeout=30)
    never_ran(w, redis_server, r.id)


@pytest.mark.timeout(90)
def test_a_tampered_signed_task_is_refused_logged_and_never_run(worker, store, redis_server):
    """The captured signed ``add(2, 2)`` with its arguments changed to
    ``(2, 3)`` after signing: the signature no longer matches."""
    w = worker(config=worker_config(store))
    env = json.loads((AUTH / "signed-add.json").read_bytes())
    packed = base64.b64decode(base64.b64decode(env["body"]))
    tampered = packed.replace(b"[[2, 2]", b"[[2, 3]", 1)
    assert tampered != packed
    task_id = str(uuid.uuid4())
    env["headers"]["id"] = env["properties"]["correlation_id"] = task_id
    env["body"] = base64.b64encode(base64.b64encode(tampered)).decode()
    redis_server.client.lpush("celery", json.dumps(env))
    w.wait_for_log(r"(?i)bad signature", timeout=30)
    never_ran(w, redis_server, task_id)


@pytest.mark.timeout(90)
def test_results_are_signed_with_the_workers_key_when_result_serializer_is_auth(worker, celery_app, store,
                                                                               redis_server):
    """``result_serializer = "auth"``: the stored result is the signed frame,
    and a client that accepts only signed results (``result_accept_content =
    ["auth"]``) reads it; the failure of a task is signed the same way."""
    worker(config=worker_config(store) + 'result_serializer = "auth"\n')
    c = celery_app("auth", result_serializer="auth", accept_content=["auth"], result_accept_content=["auth"],
                   security_key=str(AUTH / "key.pem"), security_certificate=str(AUTH / "cert.pem"),
                   security_cert_store=f"{store}/*.pem")
    c.app.setup_security()
    r = c.add.delay(20, 22)
    assert r.get(timeout=30) == 42
    raw = redis_server.results.get(f"celery-task-meta-{r.id}")
    framed = base64.b64decode(raw)
    assert framed.split(b"\x00\x01", 4)[2] == b"application/json", framed[:200]
    failed = c.div.delay(1, 0)
    with pytest.raises(ZeroDivisionError):
        failed.get(timeout=30)


@pytest.mark.timeout(90)
def test_a_worker_signs_with_an_encrypted_key_given_security_key_password(worker, celery_app, store):
    """``security_key_password``: the key is PKCS#8 encrypted (``openssl pkcs8 -topk8 -v2 aes-256-cbc``);
    what the worker signs with it (here its results) verifies at a client that accepts only signed results."""
    config = worker_config(store).replace(str(AUTH / "key.pem"), str(AUTH / "encrypted-key.pem"))
    worker(config=config + 'security_key_password = "celeriac-test"\nresult_serializer = "auth"\n')
    c = celery_app("auth", result_serializer="auth", accept_content=["auth"], result_accept_content=["auth"],
                   security_key=str(AUTH / "key.pem"), security_certificate=str(AUTH / "cert.pem"),
                   security_cert_store=f"{store}/*.pem")
    c.app.setup_security()
    assert c.add.delay(20, 22).get(timeout=30) == 42


@pytest.mark.timeout(90)
@pytest.mark.parametrize("password", [None, "wrong"])
def test_an_encrypted_key_without_its_password_stops_the_worker_at_start(worker, store, password):
    config = worker_config(store).replace(str(AUTH / "key.pem"), str(AUTH / "encrypted-key.pem"))
    if password:
        config += f'security_key_password = "{password}"\n'
    w = worker(config=config, wait_ready=False)
    assert wait_until(lambda: not w.alive, timeout=60), w.tail()
    assert w.returncode != 0, w.tail()
    # Celery: "SecurityError: Invalid private key: ValueError('Incorrect password, ...')", or without one
    # "TypeError: Password was not given but private key is encrypted"; Celeriac names the file and the setting.
    assert "private key" in w.log_text().lower(), w.tail()
    if STANDIN != "python":
        assert "encrypted-key.pem" in w.log_text() and "security_key_password" in w.log_text(), w.tail()


@pytest.mark.celeriac_only
def test_check_config_loads_the_signing_key_and_certificates_as_the_worker_would(store, tmp_path):
    """``celeriac check-config`` before a restart: what would stop the worker at start (here a wrong
    ``security_key_password``) stops the check, with the same reason."""
    config = worker_config(store).replace(str(AUTH / "key.pem"), str(AUTH / "encrypted-key.pem"))

    def check(text):
        (tmp_path / "signing.toml").write_text(text)
        return subprocess.run([str(CELERIAC_BIN), "check-config", str(tmp_path / "signing.toml")], cwd=tmp_path,
                              capture_output=True, text=True, env=_base_env(), timeout=60)

    ok = check(config + 'security_key_password = "celeriac-test"\n')
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"message signing: .*signs as NO Celeriac Test producer \d+.*: OK", ok.stderr), ok.stderr
    assert "celeriac-test" not in ok.stdout + ok.stderr, "the password is shown"
    bad = check(config + 'security_key_password = "wrong"\n')
    assert bad.returncode != 0, bad.stdout
    assert "encrypted-key.pem" in bad.stderr and "cannot decrypt it with security_key_password" in bad.stderr, \
        bad.stderr
