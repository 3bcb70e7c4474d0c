"""A small Celery app for trying Taskward: tasks that add, fail and retry.

Run a worker:  CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A app worker -E
Send tasks:    python -c "import app; app.add.delay(2, 3); app.fail.delay()"
"""

import os

from celery import Celery

app = Celery("app", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
# Task events on unless TASK_EVENTS=0 (the Taskward agent can switch them on at run time).
app.conf.worker_send_task_events = os.environ.get("TASK_EVENTS", "1") == "1"
# Lets `restart-worker` (Celery's pool_restart) work.
app.conf.worker_pool_restarts = True


@app.task
def add(x, y):
    return x + y


@app.task
def fail():
    raise ValueError("failed on purpose")


@app.task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self):
    raise self.retry(exc=RuntimeError("flaky attempt %d" % self.request.retries))


@app.task
def sleepy(seconds):
    import time

    time.sleep(seconds)
    return seconds


@app.task
def greet(name, greeting="hello"):
    return "%s %s" % (greeting, name)


@app.task
def login(user, password=None, email=None):
    """Takes secret-looking kwargs: the agent redacts them before they leave the host."""
    return "logged in %s" % user
