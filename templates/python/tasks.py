"""The tasks of {{name}}: built as ``{{name}}.wasm``, a Celeriac worker serves them as ``{{name}}.add``, ...

Build with ``celeriac build .`` (needs ``pip install componentize-py==0.25.1``),
try with ``celeriac run -A dist {{name}}.add 4 4``. Every top-level module of
this directory is imported at build time; ``@task`` functions anywhere in them
are served.
"""

from celeriac import get_task_logger, task

logger = get_task_logger(__name__)


@task
def add(x, y):
    logger.info("adding %s and %s", x, y)
    return x + y
