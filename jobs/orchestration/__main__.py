"""``python -m jobs.orchestration nights|replay|airflow`` (see ``jobs.orchestration.local``)."""

import sys

from jobs.orchestration.local import main

sys.exit(main())
