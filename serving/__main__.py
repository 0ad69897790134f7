"""``python -m serving predict ...``: offline scoring (:mod:`serving.offline`);
``python -m serving models ...``: the model versions CLI (:mod:`serving.models_cli`);
``python -m serving monitor report ...``: the monitoring report (:mod:`serving.monitor_report`)."""

import sys

if sys.argv[1:2] == ["models"]:
    from serving.models_cli import main as models_main

    sys.exit(models_main(sys.argv[2:]))

if sys.argv[1:2] == ["monitor"]:
    from serving.monitor_report import main as monitor_main

    sys.exit(monitor_main(sys.argv[2:]))

from serving.offline import main  # noqa: E402

sys.exit(main())
