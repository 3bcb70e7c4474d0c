#!/usr/bin/env bash
# Makes the example's own Python: a venv in examples/celery-app/.venv with Celery (Redis and
# RabbitMQ transports) and nothing else, so trying the example needs no system packages
# beyond python3 with its venv module. Safe to run again: an existing venv is kept.
# Usage: examples/celery-app/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if "$venv/bin/python" -c "import celery, redis" >/dev/null 2>&1; then
    echo "Celery $("$venv/bin/python" -c 'import celery; print(celery.__version__)') is in $venv already"
    exit 0
fi
python3 -m venv "$venv" || {
    echo "python3 -m venv failed: install python3 and its venv module (Debian: apt install python3-venv)" >&2
    exit 1
}
"$venv/bin/pip" install --quiet "celery[redis]>=5.4,<6"
echo "Celery $("$venv/bin/python" -c 'import celery; print(celery.__version__)') installed in $venv"
