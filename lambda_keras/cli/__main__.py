"""`python -m lambda_keras.cli`: the `lambda-keras` command."""

import sys

from lambda_keras.cli import main

sys.exit(main())
