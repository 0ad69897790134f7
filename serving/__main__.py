"""``python -m serving predict MODEL --input FILE --output FILE``: offline scoring (:mod:`serving.offline`)."""

import sys

from serving.offline import main

sys.exit(main())
