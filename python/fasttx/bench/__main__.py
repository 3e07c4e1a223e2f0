"""``python -m fasttx.bench ...`` = ``fasttx bench ...``."""

import sys

from . import main

sys.exit(main())
