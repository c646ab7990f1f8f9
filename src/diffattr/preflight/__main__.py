"""`python -m diffattr.preflight FILE...`: locate YAML errors and empty sections in config files."""

import sys

from diffattr.preflight.config_files import main

sys.exit(main(sys.argv[1:]))
