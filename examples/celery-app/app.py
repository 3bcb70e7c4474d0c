"""A small Celery app for trying Taskward: tasks that add, fail, retry, sleep, spawn children
and take secret-looking or very large arguments.

Run a worker:  CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A app worker -E
Send tasks:    python -c "import app; app.add.delay(2, 3); app.fail.delay()"
"""

import os

from celery import Celery

app = Celery("app", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
# Task events on unless TASK_EVENTS=0 (the Taskward agent can switch them on at run time).
app.conf.worker_send_task_events = os.environ.get("TASK_EVENTS", "1") == "1"
# Lets `restart-worker` (Celery's pool_restart) work, unless POOL_RESTARTS=0.
app.conf.worker_pool_restarts = os.environ.get("POOL_RESTARTS", "1") == "1"


@app.task
def add(x, y):
    return x + y


@app.task
def fail():
    raise ValueError("failed on purpose")


@app.task
def fail_loudly(size):
    """Fails with what careless code sends: a NUL byte and a message of `size` bytes."""
    raise ValueError("nul\x00byte " + "x" * size)


@app.task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self):
    raise self.retry(exc=RuntimeError("flaky attempt %d" % self.request.retries))


@app.task
def sleepy(seconds):
    import time

    time.sleep(seconds)
    return seconds


@app.task
def divide(x, y):
    """Fails when y is 0 (ZeroDivisionError): retry it with the kwargs overridden, {"y": 2}."""
    return x / y


@app.task
def greet(name, greeting="hello"):
    return "%s %s" % (greeting, name)


@app.task
def login(user, password=None, email=None):
    """Takes secret-looking kwargs: the agent redacts them before they leave the host. The
    result shows only the password's length, so a retry can be seen to use the real one."""
    return "logged in %s with a %d-character password" % (user, len(password or ""))


@app.task
def spawn(n):
    """Starts n children (add), so a task tree has depth."""
    return [add.delay(i, i).id for i in range(n)]


@app.task
def digest(blob, seconds=0):
    """Takes a large argument (its repr in events is truncated near 1 KiB) and returns its
    length and checksum, so a retry can be seen to carry the whole of it."""
    import hashlib
    import time

    time.sleep(seconds)
    return "%d:%s" % (len(blob), hashlib.sha256(blob.encode()).hexdigest()[:12])
